#!/usr/bin/env bash
# VkD Table 4: BigGAN + DiffAugment on CIFAR-10/100 at 10%, 20% and 100% of the training data, the rows
# DA, DA + KD (CLIP; = FitNets, preset fitnets is an alias), DA + VkD, DA + VkD w/ whitening, SPKD, PKD,
# KD-DLGAN and Label Distillation, three seeds each, FID of the best EMA generator
# against the test split (10k samples), tabulated into results/gan_cifar_table4.md.
#
# Needs a CUDA GPU, CIFAR under $DATA_ROOT (torchvision layout) and the CLIP ViT-B/32 weights (the `openai`
# tag downloads them once; or set CLIP_WEIGHTS=/path/to/open_clip_pytorch_model.bin). Inception weights come
# from torch-fidelity's default download, or INCEPTION_WEIGHTS=/path/to/weights-inception-2015-12-05-6726825d.pth.
#
# Usage: scripts/gan_cifar.sh [cifar10|cifar100|all] [0.1|0.2|1.0|all]
#   env: DATA_ROOT (data), RUNS (runs/gan_cifar), SEEDS ("0 1 2"), PRESETS ("da da-kd vkd vkd-whiten spkd pkd
#        kd-dlgan label-distillation"),
#        LECAM (0.3: KD-DLGAN's scripts, which VkD started from, add LeCam 0.3; 0 = the plain DiffAugment protocol),
#        KD_WEIGHT (unset: each preset's own --kd-weight, 1 except SPKD 30 and PKD 3000, calibrated at the CPU
#        study's regime (results/gan_calibration.md); VkD does not publish its weights; set: that weight for every
#        distillation row), NPROC (GPUs for torchrun, 1),
#        DRY_RUN (1: print every command, one per line, and run nothing; no GPU or data needed).
set -euo pipefail

DATASETS=${1:-all}; FRACTIONS=${2:-all}
[ "$DATASETS" = all ] && DATASETS="cifar10 cifar100"
[ "$FRACTIONS" = all ] && FRACTIONS="0.1 0.2 1.0"
DATA_ROOT=${DATA_ROOT:-data}; RUNS=${RUNS:-runs/gan_cifar}; SEEDS=${SEEDS:-"0 1 2"}
PRESETS=${PRESETS:-"da da-kd vkd vkd-whiten spkd pkd kd-dlgan label-distillation"}; LECAM=${LECAM:-0.3}; KD_WEIGHT=${KD_WEIGHT:-}; NPROC=${NPROC:-1}
DRY_RUN=${DRY_RUN:-}

die() { echo "gan_cifar.sh: $*" >&2; exit 2; }
# Everything is checked before the first command: the plan, then (unless DRY_RUN) the GPU and the data.
for fraction in $FRACTIONS; do
  case $fraction in 0.1|0.2|1.0) ;; *) die "unknown fraction $fraction (0.1, 0.2, 1.0, all)";; esac
done
for dataset in $DATASETS; do
  case $dataset in cifar10|cifar100) ;; *) die "unknown dataset $dataset (cifar10, cifar100, all)";; esac
done
case $NPROC in ''|*[!0-9]*|0) die "NPROC must be a positive integer, got '$NPROC'";; esac
for seed in $SEEDS; do case $seed in ''|*[!0-9]*) die "SEEDS must be non-negative integers, got '$seed'";; esac; done
python -c 'import sys; from gan_kd.presets import PRESETS
bad = [p for p in sys.argv[1:] if p not in PRESETS]
sys.exit("gan_cifar.sh: unknown preset(s) " + ", ".join(bad) + "; allowed: " + ", ".join(PRESETS) if bad else 0)' $PRESETS \
  || exit 2
if [ -z "$DRY_RUN" ]; then
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || die "no CUDA GPU visible; these runs take days on a GPU (use scripts/gan_fmnist_study.py for the CPU-scale study)"
  for dataset in $DATASETS; do
    case $dataset in
      cifar10) [ -f "$DATA_ROOT/cifar-10-batches-py/data_batch_1" ] || die "CIFAR-10 missing: expected $DATA_ROOT/cifar-10-batches-py/ (set DATA_ROOT)";;
      cifar100) [ -f "$DATA_ROOT/cifar-100-python/train" ] || die "CIFAR-100 missing: expected $DATA_ROOT/cifar-100-python/ (set DATA_ROOT)";;
    esac
  done
fi
run() { if [ -n "$DRY_RUN" ]; then printf '%q ' "$@"; echo; else "$@"; fi; }

# Reference lengths (DiffAugment BigGAN-CIFAR scripts: 200 real images per iteration over N epochs).
iterations() {
  case "$1 $2" in
    "cifar10 0.1"|"cifar100 0.1") echo 125000;;
    "cifar10 0.2"|"cifar100 0.2"|"cifar10 1.0") echo 250000;;
    "cifar100 1.0") echo 500000;;
    *) die "unknown fraction $2 (0.1, 0.2, 1.0, all)";;
  esac
}

teacher=(--teacher clip:ViT-B-32-quickgelu)   # OpenAI's ViT-B/32 (QuickGELU), as KD-DLGAN's clip.load("ViT-B/32")
if [ -n "${CLIP_WEIGHTS:-}" ]; then teacher+=(--teacher-weights "$CLIP_WEIGHTS"); else teacher+=(--teacher-pretrained openai); fi
inception=(); [ -n "${INCEPTION_WEIGHTS:-}" ] && inception=(--inception-weights "$INCEPTION_WEIGHTS")
launch=(gan-kd); [ "$NPROC" -gt 1 ] && launch=(torchrun --nproc_per_node "$NPROC" -m gan_kd.cli)

for dataset in $DATASETS; do
  runs=()
  for fraction in $FRACTIONS; do
    for preset in $PRESETS; do
      for seed in $SEEDS; do
        out=$RUNS/${dataset}_${fraction}_${preset}_seed${seed}
        extra=(); [ "$preset" != da ] && extra=("${teacher[@]}")
        [ "$preset" != da ] && [ -n "$KD_WEIGHT" ] && extra+=(--kd-weight "$KD_WEIGHT")
        run "${launch[@]}" train --out "$out" --preset "$preset" --dataset "$dataset" --data-root "$DATA_ROOT" \
          --data-fraction "$fraction" --iterations "$(iterations "$dataset" "$fraction")" --lecam "$LECAM" \
          --eval-every 4000 --eval-samples 10000 --metrics fid --checkpoint-every 2000 --sample-every 4000 \
          --seed "$seed" "${inception[@]}" "${extra[@]}"
        run gan-kd evaluate "$out" --checkpoint best --num-samples 10000 --metrics fid,isc "${inception[@]}"
        runs+=("$out")
      done
    done
  done
  run gan-kd table "${runs[@]}" --metric fid --out "results/gan_${dataset}_table4.md"
done
