#!/usr/bin/env bash
# twins-curve.sh: what twins of the source (extract --twins) buy, on the
# development zoos (7527, 8455, 2828: every earlier choice was made on
# them; the held-out judgement is scripts/benchmark.sh with TWINS=16 on a
# fresh zoo). Every model answers every input the source misclassifies
# (a natural extraction at τ = 0); scripts/analysis/twins.py then selects
# keys as extract would, with 0 to 16 of the 16 twins, and judges each
# zoo against the 99 calibration models' empirical 1 % line.
#
#   scripts/twins-curve.sh      # after scripts/benchmark.sh made the zoos, the fleets and the twins
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
CACHE=${CACHE:-conferral-cache/benchmark-lenet}
REPORT=${REPORT:-docs/results/twins-curve}
C="bin/conferral"
Q=(--quiet --threads "$THREADS")
SRC=$CACHE/source.safetensors
A=$CACHE/twins-curve
mkdir -p "$A" "$REPORT"
PAR=${PAR:-2}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
twins 16 # TWIN: the 16 twins benchmark.sh TWINS=16 trains (trained here where missing)
all=$A/all.safetensors
[ -f "$all" ] || $C extract "${Q[@]}" --natural --source "$SRC" --surrogates "$(join "$CACHE"/fleet/surr-*.safetensors "$CACHE"/fleet2/surr2-*.safetensors)" \
  --references "$(join "$CACHE"/fleet/ref-*.safetensors "$CACHE"/fleet2/ref2-*.safetensors)" --tau 0 --tau-surr 0 --candidates 10000 --out "$all" >/dev/null
# ask NAME MODEL...: the models' answers to every key, one verify.
ask() {
  local name=$1; shift
  [ -s "$A/$name.json" ] || $C verify "${Q[@]}" --fingerprint "$all" --suspect "$(join "$@")" --json >"$A/$name.json"
}
ask fleet "$CACHE"/fleet/*.safetensors "$CACHE"/fleet2/*.safetensors
ask twins "${TWIN[@]}"
ask calibration "$CACHE"/calibration/*.safetensors "$CACHE"/calibration2/*.safetensors
for z in 7527 8455 2828; do
  mapfile -t specs < <(cut -f4 "$CACHE/zoo-$z/suspects.tsv")
  ask "zoo-$z" "${specs[@]}"
  cp "$CACHE/zoo-$z/suspects.tsv" "$A/zoo-$z.tsv"
done
/usr/bin/python3 scripts/analysis/twins.py "$A" 7527 8455 2828 >"$REPORT/README.md"
echo "scripts/twins-curve.sh" >"$REPORT/COMMAND"
