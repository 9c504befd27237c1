#!/usr/bin/env bash
# null.sh: where a calibrated 1 % line can honestly sit (issues 13 and 18),
# on the development zoo of scripts/levers.sh (already judged: nothing here
# is held out). Calibrates the levers' C-BIM (fleet8) and natural
# (natural16) fingerprints with 12, 48 and 99 independent models
# (calibration/ and scripts/lib.sh's calibration2) and compares fits of
# the null and the empirical test by the 1 % line they draw and the
# development zoo's errors at it (scripts/analysis/null.py).
#
#   ZOO_SEED=7527 scripts/null.sh      # after scripts/levers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}
ZOO_SEED=${ZOO_SEED:-7527}
CACHE=${CACHE:-conferral-cache/benchmark-lenet}
REPORT=${REPORT:-docs/results/calibration-null}
C="bin/conferral"
Q=(--quiet --threads "$THREADS")
PAR=${PAR:-2}
SRC=$CACHE/source.safetensors
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
L=$CACHE/levers
[ -f "$L/results-$ZOO_SEED.json" ] || { echo "no levers results at $L/results-$ZOO_SEED.json: run ZOO_SEED=$ZOO_SEED scripts/levers.sh first" >&2; exit 2; }
calibration2
mkdir -p "$REPORT" "$L/null"
CAL12=("$CACHE"/calibration/cal-*.safetensors)
CAL2=()
for j in $(seq 0 86); do CAL2+=("$(ls "$CACHE"/calibration2/cal2-"$j"-*.safetensors)"); done
CAL48=("${CAL12[@]}" "${CAL2[@]:0:36}") CAL99=("${CAL12[@]}" "${CAL2[@]}")
SPECS=()
for v in fleet8:0 natural16:4; do
  name=${v%%:*} files=()
  for n in 12 48 99; do
    out=$L/null/$name.cal$n.json
    if [ ! -f "$out" ]; then
      log "calibrate $name on $n models"
      declare -n set=CAL$n
      $C calibrate "${Q[@]}" --fingerprint "$L/$name.safetensors" --models "$(join "${set[@]}")" --out "$out" >/dev/null
    fi
    files+=("$out")
    cp "$out" "$REPORT/"
  done
  SPECS+=("$v:$(IFS=:; echo "${files[*]}")")
done
log "fits"
{
  cat <<MD
# Where the calibrated 1 % line can sit (Fashion-MNIST, LeNet-5 source, CPU scale)

Reproduce with:

    ZOO_SEED=$ZOO_SEED scripts/null.sh

The development zoo $ZOO_SEED of docs/results/levers (62 distinct suspects: 32 derived, 30 independent; already judged, so nothing here is held out) against two of the levers' fingerprints — C-BIM on the 8+8 fleet (fleet8, 68 keys) and natural keys on the 16+16 fleet (natural16, 84 keys) — calibrated by 12, 48 and 99 independent models (the defender's half, no source: lenet, mlp and mlpdrop over ten recipes; \`scripts/lib.sh\`'s calibration2). Each row is one model of the null and the 1 % line it draws; the last row of each group is the empirical test, which accuses a suspect above all but the share of the models the level allows and is exact for a suspect exchangeable with them. It reaches 1 % only with 99 models; with 12 and 48 the row shows its line at 1/13 and 1/49.

MD
  /usr/bin/python3 scripts/analysis/null.py "$L/results-$ZOO_SEED.json" "${SPECS[@]}" 2>/dev/null
} >"$REPORT/README.md"
echo "ZOO_SEED=$ZOO_SEED scripts/null.sh" >"$REPORT/COMMAND"
log "done: $REPORT"
