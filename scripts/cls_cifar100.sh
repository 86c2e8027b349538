#!/usr/bin/env bash
# Logit standardisation (Sun et al., CVPR 2024) Tables 1-2 and DCD (Giakoumoglou & Stathaki) Table 1 on CIFAR-100:
# the 17 teacher -> student pairs of the two tables (listed below), methods KD, KD+LS, DKD, DKD+LS, FitNet, VkD, DCD,
# DCD+KD and RSD with the cifar100 recipe (RepDistiller / mdistiller: SGD, batch 64, 240 epochs), three seeds each,
# plus the students trained alone (CE) and, unless given, the teachers; best test top-1 over seeds, tabulated into
# results/cls_cifar100.md.
#
# Needs a CUDA GPU and CIFAR-100 under $DATA_ROOT (torchvision layout: $DATA_ROOT/cifar-100-python/). Teachers: with
# TEACHER_DIR set, the published checkpoints $TEACHER_DIR/<T>_vanilla/ckpt_epoch_240.pth for T in resnet56 resnet110
# resnet32x4 wrn_40_2 vgg13 ResNet50 (CRD/RepDistiller's fetch_pretrained_teachers.sh, or mdistiller's
# cifar_teachers.tar); without it, each teacher is first trained here with the same recipe into $RUNS/teachers/<T>.
#
# Pairs (teacher:student): LS Table 1 resnet32x4:ShuffleV2 resnet32x4:wrn_16_2 resnet32x4:wrn_40_2 wrn_40_2:resnet8x4
# wrn_40_2:MobileNetV2 vgg13:MobileNetV2 ResNet50:MobileNetV2; LS Table 2 resnet32x4:resnet8x4 vgg13:vgg8
# wrn_40_2:wrn_40_1 wrn_40_2:wrn_16_2 resnet56:resnet20 resnet110:resnet32 resnet110:resnet20; DCD Table 1 has ten of
# these plus ResNet50:vgg8 resnet32x4:ShuffleV1 wrn_40_2:ShuffleV1. Per-pair settings (PAIR_TABLE below):
#   * DKD beta: mdistiller's configs/cifar100/dkd/*.yaml (2 for resnet56:resnet20 and resnet110:resnet32; 6 for
#     vgg13:vgg8, vgg13:MobileNetV2, wrn_40_2:wrn_16_2, wrn_40_2:wrn_40_1); 8 (the default) for every other pair,
#     including the six pairs mdistiller has no DKD config for.
#   * KD+LS base temperature / KD weight: the lsKD README's linked logs `kd,T,S,T_base,weight.txt` (3/9 for
#     resnet32x4:wrn_16_2, resnet32x4:wrn_40_2, wrn_40_2:MobileNetV2, vgg13:MobileNetV2, vgg13:vgg8; 3/1 for
#     ResNet50:MobileNetV2; 2/9 elsewhere; resnet110:resnet20 has no linked log, so it gets the README command's 2/9).
#     LS_PER_PAIR=0 uses the README command (--base-temp 2 --kd-weight 9) for every pair.
#   * DKD+LS: the recipe's standardised DKD (alpha and beta x 9, temperature 2, lsKD's README command) with the
#     pair's DKD beta x 9 (`--set` replaces the value after the x 9 of --zscore, hence the product).
#
# Usage: scripts/cls_cifar100.sh    (no arguments; everything is set through the environment)
#   env: DATA_ROOT (data), RUNS (runs/cls_cifar100), SEEDS ("0 1 2"),
#        METHODS ("kd kd-zscore dkd dkd-zscore fitnet vkd dcd dcd+kd rsd"; kd-zscore = --method kd --zscore),
#        PAIRS (all 17, as teacher:student), TEACHER_DIR (unset: train the teachers), TEACHER_SEED (0),
#        BASELINES (1: also train each student alone, `distill --method ce`), LS_PER_PAIR (1),
#        NPROC (GPUs for torchrun, 1; the recipe's batch 64 is per process, so NPROC>1 changes the global batch),
#        EXTRA (more options for every training run, e.g. "--workers 8 --channels-last"),
#        OUT (results/cls_cifar100.md), DRY_RUN (1: print every command instead of running it; no GPU/data checks).
set -euo pipefail
source "$(dirname "$0")/cls_common.sh"

NAME=cls_cifar100.sh
usage="usage: scripts/$NAME (no arguments; env DATA_ROOT RUNS SEEDS METHODS PAIRS TEACHER_DIR TEACHER_SEED BASELINES LS_PER_PAIR NPROC EXTRA OUT DRY_RUN)"
check_no_arguments "$@"

DATA_ROOT=${DATA_ROOT:-data}; RUNS=${RUNS:-runs/cls_cifar100}; SEEDS=${SEEDS:-"0 1 2"}
METHODS=${METHODS:-"kd kd-zscore dkd dkd-zscore fitnet vkd dcd dcd+kd rsd"}
TEACHER_DIR=${TEACHER_DIR:-}; TEACHER_SEED=${TEACHER_SEED:-0}; BASELINES=${BASELINES:-1}; LS_PER_PAIR=${LS_PER_PAIR:-1}
NPROC=${NPROC:-1}; OUT=${OUT:-results/cls_cifar100.md}; DRY_RUN=${DRY_RUN:-0}
read -r -a extra <<< "${EXTRA:-}"

# teacher student dkd_beta ls_kd_base_temperature ls_kd_weight
PAIR_TABLE="
resnet32x4 ShuffleV2   8 2 9
resnet32x4 wrn_16_2    8 3 9
resnet32x4 wrn_40_2    8 3 9
wrn_40_2   resnet8x4   8 2 9
wrn_40_2   MobileNetV2 8 3 9
vgg13      MobileNetV2 6 3 9
ResNet50   MobileNetV2 8 3 1
resnet32x4 resnet8x4   8 2 9
vgg13      vgg8        6 3 9
wrn_40_2   wrn_40_1    6 2 9
wrn_40_2   wrn_16_2    6 2 9
resnet56   resnet20    2 2 9
resnet110  resnet32    2 2 9
resnet110  resnet20    8 2 9
ResNet50   vgg8        8 2 9
resnet32x4 ShuffleV1   8 2 9
wrn_40_2   ShuffleV1   8 2 9
"
PAIRS=${PAIRS:-$(awk 'NF { printf "%s:%s ", $1, $2 }' <<< "$PAIR_TABLE")}

# teacher_file TEACHER: its published checkpoint under TEACHER_DIR (cls_common.sh's hook).
teacher_file() { echo "$TEACHER_DIR/${1}_vanilla/ckpt_epoch_240.pth"; }
# train_teacher OUT_DIR TEACHER: train it here with the recipe (cls_common.sh's plan_teachers hook).
train_teacher() { launch "$1" train-teacher --model "$2" "${common[@]}" --seed "$TEACHER_SEED"; }

# ---- Validate the plan, then refuse without a GPU / data / teachers, before anything is launched.
check_pairs_in_table
check_methods
check_nproc
list_pair_members
if [ "$DRY_RUN" != 1 ]; then
  require_gpu_and_cli
  require_cifar100
  require_teacher_files train
fi

start_plan
common=(--dataset cifar100 --data-root "$DATA_ROOT" --recipe cifar100 "${extra[@]}")

# ---- Teachers: trained here (one seed) unless TEACHER_DIR has them.
plan_teachers

# ---- Students alone (the tables' "Student" row).
if [ "$BASELINES" = 1 ]; then
  for student in $students; do
    launch_seeds "$RUNS/students/$student/ce" distill --student "$student" --method ce "${common[@]}"
  done
fi

# ---- Distillation.
for pair in $PAIRS; do
  teacher=${pair%%:*}; student=${pair#*:}
  read -r _ _ beta ls_temperature ls_weight <<< "$(pair_row "$teacher" "$student")"
  [ "$LS_PER_PAIR" = 1 ] || { ls_temperature=2; ls_weight=9; }
  for method in $METHODS; do
    case $method in
      kd-zscore)
        if [ "$ls_weight" = 9 ]; then args=(--method kd --zscore)
        else args=(--loss "kd:$ls_weight" --zscore --ce-weight 0.1); fi  # lsKD keeps CE at 0.1
        args+=(--set "kd.temperature=$ls_temperature");;
      *) method_args "$method" "$beta";;
    esac
    launch_seeds "$RUNS/${teacher}_$student/$method" distill --student "$student" --teacher "$teacher" \
      --teacher-ckpt "${teacher_ckpt[$teacher]}" "${args[@]}" "${common[@]}"
  done
done

write_table
