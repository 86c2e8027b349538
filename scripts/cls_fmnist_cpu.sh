#!/usr/bin/env bash
# CPU-scale distillation study on real data available offline: Fashion-MNIST at 10% of the training set
# (6,000 images), every distillation method of this package from one teacher to one student.
#
# The teacher is a resnet32 trained here on all of Fashion-MNIST (the FD network of scripts/gan_fmnist_cpu.sh,
# trained again with the same command if missing); the student is a resnet20. Everything is far shorter than
# the CIFAR-100 recipe (6 epochs of 93 steps instead of 240 epochs): the table says what a CPU can measure
# in an hour, not what the papers' GPU runs give. DKD's warm-up is scaled with the run (1 epoch of 6 instead
# of 20 of 240). Results: results/cls_fmnist_cpu.md.
#
# env: DATA_ROOT (data; Debian's dataset-fashion-mnist is found automatically), RUNS (runs/cls_fmnist_cpu),
#      SEEDS ("0"; results/cls_fmnist_cpu.md has "0 1"), PARALLEL (2 runs at a time, 1 thread each), FRACTION (0.1), EPOCHS (6), MILESTONES (4,5),
#      METHODS ("ce kd kd-zscore dkd dkd-zscore fitnet vkd dcd dcd+kd rsd"; X-zscore = --method X --zscore)
set -euo pipefail
DATA_ROOT=${DATA_ROOT:-data}; RUNS=${RUNS:-runs/cls_fmnist_cpu}; SEEDS=${SEEDS:-0}; PARALLEL=${PARALLEL:-2}
FRACTION=${FRACTION:-0.1}; EPOCHS=${EPOCHS:-6}; MILESTONES=${MILESTONES:-4,5}
METHODS=${METHODS:-"ce kd kd-zscore dkd dkd-zscore fitnet vkd dcd dcd+kd rsd"}
TEACHER_RUN=runs/teachers/fmnist_resnet32
mkdir -p "$DATA_ROOT"  # an explicit --data-root must exist; the files come from Debian's package if not in it
export OMP_NUM_THREADS=1

# 1. the teacher: resnet32 on all 60k images, ~2 passes (the same command as scripts/gan_fmnist_cpu.sh)
if [ ! -f "$TEACHER_RUN/checkpoints/best.pt" ]; then
  OMP_NUM_THREADS=2 classifier-kd train-teacher --model resnet32 --dataset fashion_mnist --data-root "$DATA_ROOT" \
    --epochs 6 --max-steps-per-epoch 160 --milestones 4,5 --batch-size 128 --lr 0.1 --workers 0 --device cpu \
    --log-every 40 --seed 1 --out "$TEACHER_RUN"
fi

# 2. the students, PARALLEL at a time
run_student() {  # method seed
  local method=${1%-zscore} out=$RUNS/resnet32_resnet20_$1_seed$2 extra=()
  [ -f "$out/result.json" ] && return 0  # finished (delete the folder to run it again)
  [ "$1" != "$method" ] && extra+=(--zscore)
  case $method in dkd) extra+=(--set dkd.warmup_epochs=1);; esac
  [ "$method" != ce ] && extra+=(--teacher-ckpt "$TEACHER_RUN/checkpoints/best.pt")  # ce has no teacher
  classifier-kd distill --student resnet20 --method "$method" \
    "${extra[@]}" --dataset fashion_mnist --data-root "$DATA_ROOT" --data-fraction "$FRACTION" --epochs "$EPOCHS" \
    --milestones "$MILESTONES" --workers 0 --device cpu --log-every 50 --seed "$2" --out "$out" > "$out.log" 2>&1
}
mkdir -p "$RUNS"
for seed in $SEEDS; do
  for method in $METHODS; do
    run_student "$method" "$seed" &
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 5; done
  done
done
wait
classifier-kd table "$TEACHER_RUN" "$RUNS"/resnet32_resnet20_*_seed*/ --out results/cls_fmnist_cpu.md
