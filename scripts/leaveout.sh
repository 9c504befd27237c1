#!/usr/bin/env bash
# leaveout.sh: what the training fleet's diversity buys (issue 18, item 2),
# for natural fingerprints: leave one group of training models out of the
# extraction — one architecture, or one augmentation family (crops vs none
# or noise) — and judge the suspects of that group only, beside the
# fingerprint of the whole 16+16 fleet on the same suspects.
#
#   ZOO_SEED=8455 scripts/leaveout.sh
#
# Needs scripts/benchmark.sh's cache for ZOO_SEED, fleet2 (WIDE=1) and the
# natural fingerprints of TAG=natural. Each left-out fingerprint is
# extracted as the benchmark's (τ 0.6, 1,000 candidates, seed 1) and
# calibrated only on the calibration models outside the left-out group,
# since a defender who never trained such a model would not have them
# either. Suspects are the zoo's, with the group read from the manifest
# (architecture column, or aug= in the recipe; fine-tunings of the source
# and architectures no fleet model has are in no group).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
ZOO_SEED=${ZOO_SEED:?the zoo to judge, e.g. ZOO_SEED=8455}
CACHE=${CACHE:-conferral-cache/benchmark-lenet}
REPORT=${REPORT:-docs/results/leaveout}
C="bin/conferral"
Q=(--quiet --threads "$THREADS")
PAR=1
SRC=$CACHE/source.safetensors
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
FULL=$CACHE/natural/fp-1.safetensors
[ -f "$FULL" ] || { echo "no $FULL: run ZOO_SEED=$ZOO_SEED TAG=natural WIDE=1 EXTRACT='--natural --candidates 1000 --tau 0.6 --tau-surr 0' scripts/benchmark.sh first" >&2; exit 2; }
L=$CACHE/leaveout
mkdir -p "$L" "$REPORT"

# family MODEL: the augmentation family of a fleet or calibration model's
# recipe, from its file name (fleet/: index mod 2 over benchmark.sh's two
# recipes; fleet2/: mod 4 over lib.sh's four; calibration/: mod 4 over
# benchmark.sh's four) — crop for crops or crops and flips, else plain
# (none or noise).
family() {
  local f=${1##*/} i
  i=${f##*-} i=${i%.safetensors}
  case $1 in
    */fleet2/*) [ $((i % 4)) -le 1 ] && echo crop || echo plain ;;
    */fleet/*) [ $((i % 2)) -eq 0 ] && echo crop || echo plain ;;
    */calibration/*) i=${f#cal-} i=${i%%-*}; [ $((i % 2)) -eq 0 ] && echo crop || echo plain ;;
  esac
}
# arch MODEL: its architecture, from its file name (fleet: ROLE-ARCH-I,
# calibration: cal-J-ARCH).
arch() {
  local f=${1##*/}
  f=${f%.safetensors}
  case $1 in
    */calibration/*) echo "${f##*-}" ;;
    *) f=${f%-*} && echo "${f##*-}" ;;
  esac
}

# ingroup KIND GROUP MODEL: whether a training or calibration model is in the group.
ingroup() { if [ "$1" = arch ]; then [ "$(arch "$3")" = "$2" ]; else [ "$(family "$3")" = "$2" ]; fi; }

run() {
  local kind=$1 group=$2 surr=() refs=() cal=() m
  for m in "$CACHE"/fleet/surr-*.safetensors "$CACHE"/fleet2/surr2-*.safetensors; do ingroup "$kind" "$group" "$m" || surr+=("$m"); done
  for m in "$CACHE"/fleet/ref-*.safetensors "$CACHE"/fleet2/ref2-*.safetensors; do ingroup "$kind" "$group" "$m" || refs+=("$m"); done
  for m in "$CACHE"/calibration/cal-*.safetensors; do ingroup "$kind" "$group" "$m" || cal+=("$m"); done
  local fp=$L/without-$group.safetensors
  if [ ! -f "$fp" ]; then
    log "extract without $group: ${#surr[@]}+${#refs[@]} training models, ${#cal[@]} calibration models"
    $C extract "${Q[@]}" --natural --source "$SRC" --surrogates "$(join "${surr[@]}")" --references "$(join "${refs[@]}")" \
      --tau 0.6 --tau-surr 0 --candidates 1000 --seed 1 --out "$fp" --sheet "${fp%.safetensors}.png" >/dev/null
    $C calibrate "${Q[@]}" --fingerprint "$fp" --models "$(join "${cal[@]}")" >/dev/null
  fi
  # The group's suspects.
  local M=$L/suspects-$ZOO_SEED-$group.tsv
  /usr/bin/python3 - "$kind" "$group" "$CACHE/zoo-$ZOO_SEED/suspects.tsv" >"$M" <<'PY'
import re, sys
kind, group, manifest = sys.argv[1:]
for line in open(manifest):
    truth, arch, recipe, spec = line.rstrip("\n").split("\t")
    if kind == "arch":
        keep = arch == group
    else:
        m = re.search(r"aug=([a-z+]+)", recipe)
        keep = m is not None and ("crop" if m.group(1).startswith("crop") else "plain") == group
    if keep:
        print(line, end="")
PY
  mkdir -p "$L/full-$group"
  ln -sf "$(realpath "$FULL")" "$L/full-$group/whole-fleet.safetensors"
  ln -sf "$(realpath "${FULL%.safetensors}.calibration.json")" "$L/full-$group/whole-fleet.calibration.json"
  log "judge the $(wc -l <"$M") suspects of group $group"
  $C experiment benchmark "${Q[@]}" --fingerprint "$L/full-$group/whole-fleet.safetensors,$fp" \
    --describe "Fashion-MNIST; LeNet-5 source; natural fingerprints (τ 0.6) from the whole 16+16 fleet and from the fleet without $kind $group, judged on the $group suspects of zoo $ZOO_SEED" \
    --suspects "$M" --out "$REPORT/$group" --command "ZOO_SEED=$ZOO_SEED scripts/leaveout.sh" --json >"$L/results-$ZOO_SEED-$group.json"
  cp "$M" "$REPORT/$group/suspects.tsv"
}
for a in lenet mlp mlpdrop; do run arch "$a"; done
for g in crop plain; do run aug "$g"; done
echo "ZOO_SEED=$ZOO_SEED scripts/leaveout.sh" >"$REPORT/COMMAND"
log "done: $REPORT"
