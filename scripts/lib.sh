# lib.sh: what scripts/benchmark.sh, scripts/levers.sh and the experiments on the
# benchmark's zoo share. Source it after setting C (the binary), CACHE, SRC, THREADS and PAR.
QT=(--quiet --threads $(( THREADS / PAR > 0 ? THREADS / PAR : 1 )))
log() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }
join() { local IFS=,; echo "$*"; }

# train OUT ARGS...: conferral train in the background unless OUT exists,
# once fewer than PAR trainings run; settle waits for all of them.
# Models train PAR at a time, THREADS/PAR threads each: small models scale
# poorly over threads, and each process spends its first seconds loading data.
train() {
  local out=$1; shift
  [ -f "$out" ] && return 0
  while [ "$(jobs -rp | wc -l)" -ge "$PAR" ]; do wait -n; done
  log "train $out $*"
  $C train "${QT[@]}" --out "$out" "$@" >/dev/null &
}
derive() {
  local out=$1; shift
  [ -f "$out" ] && return 0
  while [ "$(jobs -rp | wc -l)" -ge "$PAR" ]; do wait -n; done
  log "derive $out $*"
  $C derive "${QT[@]}" --out "$out" "$@" >/dev/null &
}
settle() { while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n; done; }

# zoo_training ZOO: the training surrogates and references that the
# experiments on a benchmark zoo (scripts/benchmark.sh makes it) craft
# with: the first two Retraining surrogates and independent references of
# each architecture in ZOO, as the arrays SURR and REFS.
zoo_training() {
  SURR=() REFS=()
  local arch r
  for arch in lenet mlp mlpdrop; do
    for r in 0 1; do
      SURR+=("$1/retrain-$arch-$r.safetensors") REFS+=("$1/indep-$arch-$r.safetensors")
    done
  done
}

# fleet2: a second training fleet in $CACHE/fleet2, 8 surrogates and 8
# references over lenet, mlp and mlpdrop with four recipes the first fleet
# never used — Adam with crops and flips, AdamW with crops only, SGD with
# noise, SGD + Nesterov without augmentation and with label smoothing —
# so that C-BIM meets more of the ways an independent model is trained.
fleet2() {
  local archs=(lenet mlp mlpdrop) i arch r
  local recipes=("adam,lr=0.001,aug=crop+flip,epochs=2" "adamw,lr=0.001,wd=0.05,aug=crop,epochs=2" "sgd,lr=0.05,mom=0.9,aug=noise,epochs=2" "sgd+nesterov,lr=0.05,aug=none,ls=0.1,epochs=2")
  mkdir -p "$CACHE/fleet2"
  for i in $(seq 0 7); do
    arch=${archs[$((i % 3))]} r=${recipes[$((i % 4))]}
    [ "$arch" = lenet ] || r=${r/epochs=2/epochs=4} # MLPs are ~5x cheaper per epoch
    train "$CACHE/fleet2/ref2-$arch-$i.safetensors" --split defender --arch "$arch" --recipe "$r" --seed $((400 + i))
    train "$CACHE/fleet2/surr2-$arch-$i.safetensors" --split defender --arch "$arch" --teacher "$SRC" --recipe "$r" --seed $((500 + i))
  done
  settle
}

# twins N: N twins of the source in $CACHE/twins, as the array TWIN:
# independent models trained exactly as the source was (train --like: its
# architecture, data, split and recipe) from seeds 900 on. extract --twins
# keeps only keys that are rare among them too.
twins() {
  local i
  TWIN=()
  mkdir -p "$CACHE/twins"
  for i in $(seq 0 $(($1 - 1))); do
    train "$CACHE/twins/twin-lenet-$i.safetensors" --like "$SRC" --seed $((900 + i))
    TWIN+=("$CACHE/twins/twin-lenet-$i.safetensors")
  done
  settle
}

# calibration2: 87 more calibration models in $CACHE/calibration2, over
# lenet, mlp and mlpdrop and the six recipes of the two training fleets
# (every architecture with every recipe, in turn), trained on the
# defender's half without the source. With calibration/'s 12 they make a
# null of 99 independent models over ten recipes: the fewest for which a
# suspect above all of them has an empirical p-value of 1 % (1/(99+1)).
calibration2() {
  local archs=(lenet mlp mlpdrop) j arch r
  local recipes=("sgd+nesterov,epochs=2" "adam,lr=0.001,aug=none,epochs=2" "adam,lr=0.001,aug=crop+flip,epochs=2"
    "adamw,lr=0.001,wd=0.05,aug=crop,epochs=2" "sgd,lr=0.05,mom=0.9,aug=noise,epochs=2" "sgd+nesterov,lr=0.05,aug=none,ls=0.1,epochs=2")
  mkdir -p "$CACHE/calibration2"
  for j in $(seq 0 86); do
    arch=${archs[$((j % 3))]} r=${recipes[$(((j / 3) % 6))]}
    [ "$arch" = lenet ] || r=${r/epochs=2/epochs=4} # MLPs are ~5x cheaper per epoch
    train "$CACHE/calibration2/cal2-$j-$arch.safetensors" --split defender --arch "$arch" --recipe "$r" --seed $((600 + j))
  done
  settle
}
