#!/usr/bin/env bash
# evasion-honest.sh: does the evasion check flag honest models? Every
# suspect of the three held-out zoos (ZOO_SEED 2828, 8455, 7527; the
# adversary's half; scripts/benchmark.sh), unwrapped, judged by the two
# fingerprints that scripts/detect-evade.sh calibrated with true-class
# answers ($CACHE/truths). Writes $REPORT/honest.md.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
CACHE=${CACHE:-conferral-cache/benchmark-lenet}
REPORT=${REPORT:-docs/results/detect-evade/check}
C=${C:-bin/conferral}
PAR=1
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
TRUTHS=$CACHE/truths
for f in "$TRUTHS"/natural99-fp-1.calibration.json "$TRUTHS"/cbim-fp-1.calibration.json; do
  [ -f "$f" ] || { echo "evasion-honest.sh: $f is missing: run scripts/detect-evade.sh first" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  echo "# The evasion check on honest models"
  echo
  echo "Fashion-MNIST; LeNet-5 source. Every suspect of the three held-out zoos, unwrapped (derived and independent, local files and ONNX files from python3-torch), judged by the two fingerprints calibrated with true-class answers (\`$TRUTHS\`). *Share*: of a suspect's answers other than the key (on keys whose label is not the true class), the part naming the true class; shown over suspects with ten or more such answers."
  echo
  echo "Reproduce: \`scripts/evasion-honest.sh\` (after \`scripts/detect-evade.sh\`)."
  echo
  echo "| zoo | fingerprint | suspects | calibration models' share (mean) | floor | share of independent models (min–max) | share of derived models (min–max) | found evasive |"
  echo "|---|---|---|---|---|---|---|---|"
  for z in 2828 8455 7527; do
    Z=$CACHE/zoo-$z
    S=$(join "$Z"/*.safetensors "$Z"/outside/*.onnx)
    for fp in natural99-fp-1 cbim-fp-1; do
      log "verify zoo $z with $fp"
      $C verify --quiet --threads "$THREADS" --json --fingerprint "$TRUTHS/$fp.safetensors" --suspect "$S" >"$tmp/v.json"
      jq -r --arg z "$z" --arg fp "$fp" '
        def kind: (.suspect | split("/") | last) as $n
          | if ($n | test("^(retrain|distil|ft|rt|derived)")) then "derived" else "independent" end;
        def span(k): [.verdicts[] | select(kind == k and .evasion.wrong >= 10) | .evasion.share]
          | if length == 0 then "–" else "\(min * 100 | round) – \(max * 100 | round) %" end;
        "| \($z) | \($fp) | \(.verdicts | length) | \(.verdicts[0].evasion.mean * 100 | round) % | \(.verdicts[0].evasion.floor * 100 | round) % | \(span("independent")) | \(span("derived")) | "
        + ([.verdicts[] | select(.evasion.evasive) | "\(.suspect | split("/") | last) (\(kind), \(.evasion.truth)/\(.evasion.wrong))"] | if length == 0 then "none" else join(", ") end) + " |"
      ' "$tmp/v.json"
    done
  done
} >"$REPORT/honest.md"
log "done: $REPORT/honest.md"
