#!/usr/bin/env bash
# twins-cbim.sh: do twins of the source (extract --twins) help C-BIM's
# fingerprints as they help natural ones (scripts/twins-curve.sh)? The
# first benchmark's C-BIM setting (8+8 fleet, geometric loss, best
# iterate, ε 0.05, τ 0.5, τ_S 1, 600 start points, seed 1) with and
# without the 16 twins, each calibrated on the 99 calibration models and
# judged on the development zoo 7527 (ONNX files for the outside models).
#
#   scripts/twins-cbim.sh    # after scripts/benchmark.sh made the fleet, the twins, calibration2 and zoo 7527
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
CACHE=${CACHE:-conferral-cache/benchmark-lenet}
ZOO_SEED=${ZOO_SEED:-7527}
REPORT=${REPORT:-docs/results/twins-cbim}
C="bin/conferral"
Q=(--quiet --threads "$THREADS")
SRC=$CACHE/source.safetensors
A=$CACHE/twins-cbim
mkdir -p "$A" "$REPORT"
PAR=${PAR:-2}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
twins 16 # TWIN: the 16 twins benchmark.sh TWINS=16 trains (trained here where missing)
CBIM=(--eps 0.05 --steps 50 --loss geometric --best-iterate --tau 0.5 --tau-surr 1 --candidates 600 --seed 1)
TRAIN=(--source "$SRC" --surrogates "$(join "$CACHE"/fleet/surr-*.safetensors)" --references "$(join "$CACHE"/fleet/ref-*.safetensors)")
CAL=$(join "$CACHE"/calibration/*.safetensors "$CACHE"/calibration2/*.safetensors)
[ -f "$A/cbim.safetensors" ] || $C extract "${Q[@]}" "${TRAIN[@]}" "${CBIM[@]}" --out "$A/cbim.safetensors" >/dev/null
[ -f "$A/cbim-twins.safetensors" ] || $C extract "${Q[@]}" "${TRAIN[@]}" --twins "$(join "${TWIN[@]}")" "${CBIM[@]}" --out "$A/cbim-twins.safetensors" >/dev/null
for f in cbim cbim-twins; do
  [ -f "$A/$f.calibration.json" ] || $C calibrate "${Q[@]}" --fingerprint "$A/$f.safetensors" --models "$CAL" >/dev/null
done
$C experiment benchmark "${Q[@]}" --fingerprint "$A/cbim.safetensors,$A/cbim-twins.safetensors" \
  --describe "Fashion-MNIST; LeNet-5 source; C-BIM (8+8 fleet) without and with 16 twins of the source, on the development zoo $ZOO_SEED" \
  --suspects "$CACHE/zoo-$ZOO_SEED/suspects.tsv" --out "$REPORT" --command "scripts/twins-cbim.sh" --json >"$A/results-$ZOO_SEED.json"
cp "$CACHE/zoo-$ZOO_SEED/suspects.tsv" "$REPORT/suspects.tsv"
echo "scripts/twins-cbim.sh" >"$REPORT/COMMAND"
