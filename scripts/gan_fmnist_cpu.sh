#!/usr/bin/env bash
# CPU-scale version of VkD Table 4 on real data available offline: Fashion-MNIST at 10% (6,000 images),
# the four presets, a classifier teacher trained here, and FD measured with a *different* classifier
# (FD is not FID: Inception weights cannot be downloaded on the machine this was made on).
#
# Everything is smaller than the paper (width, length, one seed): the table says what a CPU can measure,
# not what the paper's GPU runs would give. Results: results/gan_fmnist_cpu.md.
#
# env: DATA_ROOT (data; Debian's dataset-fashion-mnist is found automatically), RUNS (runs/gan_fmnist_cpu),
#      ITERATIONS (600), WIDTH (8 -> g_ch = d_ch = 8), SEEDS ("0"), PARALLEL (2 runs at a time, 1 thread each),
#      PRESETS ("da da-kd vkd vkd-whiten"), FRACTION (0.1)
# The reference EMA (decay 0.9999 from iteration 1000) averages over ~10k iterations and would leave a run of
# a few hundred iterations with no average at all, so this study uses decay 0.99 from iteration 100.
set -euo pipefail
DATA_ROOT=${DATA_ROOT:-data}; RUNS=${RUNS:-runs/gan_fmnist_cpu}; ITERATIONS=${ITERATIONS:-600}; WIDTH=${WIDTH:-8}
SEEDS=${SEEDS:-0}; PARALLEL=${PARALLEL:-2}; PRESETS=${PRESETS:-"da da-kd vkd vkd-whiten"}; FRACTION=${FRACTION:-0.1}
TEACHER=runs/teachers/fmnist_resnet20/checkpoints/best.pt
FD_NET=runs/teachers/fmnist_resnet32/checkpoints/best.pt
mkdir -p "$DATA_ROOT"  # an explicit --data-root must exist; the files come from Debian's package if not in it

# 1. the teacher (resnet20) and the FD network (resnet32): ~2 passes over the 60k images each
train_classifier() {  # model seed out
  [ -f "$3/checkpoints/best.pt" ] && return 0
  classifier-kd train-teacher --model "$1" --dataset fashion_mnist --data-root "$DATA_ROOT" --epochs 6 \
    --max-steps-per-epoch 160 --milestones 4,5 --batch-size 128 --lr 0.1 --workers 0 --device cpu --seed "$2" --out "$3"
}
train_classifier resnet20 0 runs/teachers/fmnist_resnet20
train_classifier resnet32 1 runs/teachers/fmnist_resnet32

# 2. the GANs, PARALLEL at a time
run_gan() {  # preset seed
  local out=$RUNS/fmnist_${FRACTION}_$1_seed$2 teacher=()
  [ "$1" != da ] && teacher=(--teacher "ckpt:$TEACHER")
  gan-kd train --out "$out" --preset "$1" --dataset fashion_mnist --data-root "$DATA_ROOT" --data-fraction "$FRACTION" \
    --iterations "$ITERATIONS" --g-ch "$WIDTH" --d-ch "$WIDTH" --eval-every 200 --eval-samples 2000 --ema-decay 0.99 --ema-start 100 --metrics fd \
    --fd-features "ckpt:$FD_NET" --checkpoint-every 100 --sample-every 200 --log-every 50 --seed "$2" --threads 1 \
    "${teacher[@]}" > "$out.log" 2>&1
  gan-kd evaluate "$out" --checkpoint best --metrics fd --fd-features "ckpt:$FD_NET" --num-samples 10000 --repeats 2 \
    >> "$out.log" 2>&1
}
mkdir -p "$RUNS"
for seed in $SEEDS; do
  for preset in $PRESETS; do
    run_gan "$preset" "$seed" &
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 5; done
  done
done
wait
# every evaluated run of this fraction in $RUNS (earlier invocations with other SEEDS/PRESETS included)
gan-kd table "$RUNS"/fmnist_"${FRACTION}"_*_seed*/ --metric fd --out results/gan_fmnist_cpu.md
