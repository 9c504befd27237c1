#!/usr/bin/env bash
# levers.sh: what a wider training fleet, C-BIM's input diversity and
# natural fingerprints buy (issue 18, items 2 and 4), measured on the
# benchmark's development zoo — suspects already judged in
# docs/results/benchmark — so that the choice made here can be judged
# again on a fresh zoo that took part in no choice (scripts/benchmark.sh
# with the chosen setting; docs/results/benchmark-natural).
#
#   ZOO_SEED=7527 scripts/levers.sh
#
# Needs scripts/benchmark.sh's cache (source, fleet, calibration models and
# the zoo of ZOO_SEED); trains fleet2 (scripts/lib.sh) when missing. Each
# variant is extracted with seed 1, calibrated on the same 12 calibration
# models and judged on the same suspects:
#   fleet8      C-BIM as the benchmark (8+8 training models, τ 0.5, τ_S 1)
#   fleet16     the same with fleet2 added (16+16 over six recipes)
#   fleet8-di   fleet8 with input diversity (shifts of up to 2 pixels,
#               noise of SD 0.02 at every step)
#   natural     every test input the source misclassifies (τ 0, no
#               selection: SAC-w)
#   natural16   those of them with conferrability ≥ 0.6 on the 16+16 fleet
# and the per-suspect baseline (item 5): every example of fleet8's C-BIM
# run, unfiltered, asked of every model, so that agreement on the keys can
# be set against agreement on controls crafted alike
# (scripts/analysis/controls.py, written to controls.md).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
ZOO_SEED=${ZOO_SEED:?the development zoo, e.g. ZOO_SEED=7527}
CACHE=${CACHE:-conferral-cache/benchmark-lenet}
REPORT=${REPORT:-docs/results/levers}
C="bin/conferral"
Q=(--quiet --threads "$THREADS")
PAR=${PAR:-2}
SRC=$CACHE/source.safetensors
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
Z=$CACHE/zoo-$ZOO_SEED
[ -f "$Z/suspects.tsv" ] || { echo "no zoo at $Z: run ZOO_SEED=$ZOO_SEED scripts/benchmark.sh first" >&2; exit 2; }
mkdir -p "$CACHE/levers" "$REPORT"
fleet2

SURR1=("$CACHE"/fleet/surr-*.safetensors) REFS1=("$CACHE"/fleet/ref-*.safetensors)
SURR2=("${SURR1[@]}" "$CACHE"/fleet2/surr2-*.safetensors) REFS2=("${REFS1[@]}" "$CACHE"/fleet2/ref2-*.safetensors)
CAL=$(join "$CACHE"/calibration/cal-*.safetensors)

# variant NAME FLEET FLAGS...: extract (unless cached), calibrate.
FPS=() NAMES=()
variant() {
  local name=$1 fleet=$2; shift 2
  local fp=$CACHE/levers/$name.safetensors surr refs cbim=(--eps 0.05 --steps 50 --loss geometric --best-iterate)
  [[ " $* " != *" --natural "* ]] || cbim=() # extract refuses C-BIM's settings for natural errors
  if [ "$fleet" = 8 ]; then surr=$(join "${SURR1[@]}") refs=$(join "${REFS1[@]}"); else surr=$(join "${SURR2[@]}") refs=$(join "${REFS2[@]}"); fi
  if [ ! -f "$fp" ]; then
    log "extract $name ($*)"
    local t0=$SECONDS
    $C extract "${Q[@]}" --source "$SRC" --surrogates "$surr" --references "$refs" \
      "${cbim[@]}" --tau 0.5 --tau-surr 1 --candidates 600 --seed 1 "$@" \
      --out "$fp" --sheet "${fp%.safetensors}.png" >/dev/null
    echo $((SECONDS - t0)) >"${fp%.safetensors}.seconds"
  fi
  [ -f "${fp%.safetensors}.calibration.json" ] || $C calibrate "${Q[@]}" --fingerprint "$fp" --models "$CAL" >/dev/null
  FPS+=("$fp") NAMES+=("$name")
}
variant fleet8 8
variant fleet16 16
variant fleet8-di 8 --shift 2 --noise 0.02
variant natural 16 --natural --candidates 2000 --tau 0 --tau-surr 0
variant natural16 16 --natural --candidates 2000 --tau 0.6 --tau-surr 0

log "judge"
$C experiment benchmark "${Q[@]}" --fingerprint "$(join "${FPS[@]}")" \
  --describe "Fashion-MNIST; LeNet-5 source; levers ($(join "${NAMES[@]}")) on the development zoo $ZOO_SEED, already judged in docs/results/benchmark" \
  --suspects "$Z/suspects.tsv" --out "$REPORT" --command "ZOO_SEED=$ZOO_SEED scripts/levers.sh" --json >"$CACHE/levers/results-$ZOO_SEED.json"
for fp in "${FPS[@]}"; do
  d=$REPORT/$(basename "${fp%.safetensors}")
  cp "${fp%.safetensors}.calibration.json" "${fp%.safetensors}.png" "$d/"
  [ ! -f "${fp%.safetensors}.seconds" ] || cp "${fp%.safetensors}.seconds" "$d/"
done
# The per-suspect baseline.
all=$CACHE/levers/fleet8-all.safetensors
[ -f "$all" ] || $C extract "${Q[@]}" --source "$SRC" --surrogates "$(join "${SURR1[@]}")" --references "$(join "${REFS1[@]}")" \
  --eps 0.05 --steps 50 --loss geometric --best-iterate --tau 0 --tau-surr 0 --candidates 600 --seed 1 --out "$all" >/dev/null
A=$CACHE/levers/controls
mkdir -p "$A"
ask() { # ask OUT MODEL META: one model's answers to every crafted example
  [ -s "$1.json" ] || $C verify "${Q[@]}" --fingerprint "$all" --suspect "$2" --json >"$1.json"
  printf '%s\n' "$3" >"$1.meta"
}
i=0
while IFS=$'\t' read -r truth arch recipe spec; do
  ask "$A/s$i" "$spec" "$(printf '%s\t%s\t%s\t%s' "$truth" "$arch" "$recipe" "$spec")"
  i=$((i + 1))
done <"$Z/suspects.tsv"
i=0
for m in "$CACHE"/calibration/cal-*.safetensors; do ask "$A/c$i" "$m" "$m"; i=$((i + 1)); done
for m in "${SURR1[@]}" "${REFS1[@]}"; do ask "$A/f$i" "$m" "$m"; i=$((i + 1)); done
/usr/bin/python3 scripts/analysis/controls.py "$A" >"$REPORT/controls.md"
cp "$Z/suspects.tsv" "$REPORT/suspects.tsv"
echo "ZOO_SEED=$ZOO_SEED scripts/levers.sh" >"$REPORT/COMMAND"
log "done: $REPORT"
