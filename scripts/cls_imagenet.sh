#!/usr/bin/env bash
# ImageNet-1k distillation, tabulated into results/cls_imagenet.md (best val top-1):
#   * CNN pairs, recipe imagenet (mdistiller / lsKD: SGD lr 0.2, global batch 512, 100 epochs, x0.1 at 30/60/90):
#     resnet34 -> resnet18 and resnet50 -> mobilenet_v1 (logit standardisation Table 3, KD / KD+LS / DKD / DKD+LS;
#     DCD Table 3 has resnet34 -> resnet18 for DCD / DCD+KD), resnet50 -> mobilenet_v2 (the pair lsKD's ImageNet
#     configs use); resnet50 -> resnet18 (DCD Table 3) is in the table below but not in the default PAIRS.
#     Teachers are the libraries' ImageNet weights (`--teacher-pretrained`): torchvision resnet34 (IMAGENET1K_V1,
#     73.3%) and R50_TEACHER for ResNet-50 (default timm/resnet50.tv_in1k = torchvision's IMAGENET1K_V1, 76.1%, the
#     papers' 76.16 teacher; torchvision's own default resnet50 weights are IMAGENET1K_V2, 80.9%, a different teacher).
#     DKD beta: 0.5 for resnet34 -> resnet18 and 2.0 for resnet50 -> mobilenet_v1 (mdistiller's configs); 2.0 is
#     assumed for the other resnet50 pairs (no published config). DKD+LS uses beta x 9 (see cls_cifar100.sh).
#   * VkD Table 1: DeiT-Ti and DeiT-S students (vkd_deit_tiny, vkd_deit_small: VkD's DeiT) distilled
#     from a RegNetY-16GF teacher (VKD_TEACHER, default timm/regnety_160.deit_in1k: DeiT's teacher, 82.6%; timm 1.x's
#     untagged regnety_160 is an ImageNet-12k-pretrained model) with recipe deit and method vkd; and VkD Table 6 (the
#     DeiT-Ti ablation: with/without the orthogonal projector and the teacher normalisation) when VKD_ABLATION=1.
#     VkD's student is a DeiT with a convolutional stem and a "dist" token that is the mean patch embedding; its dist
#     head takes the KD term and evaluation averages the two heads (classifier_kd/models/vkd_deit.py, losses.md 1.1).
#     Set VKD_STUDENTS to timm/deit_tiny_patch16_224 ... for plain timm DeiTs.
#
# Needs a CUDA GPU (these runs take days per run on 8 GPUs), ImageNet as class folders $DATA_ROOT/train/<wnid>/ and
# $DATA_ROOT/val/<wnid>/, and the teachers' weights, which torchvision / timm fetch into their caches on first use.
# Batch sizes of the recipes are per process: with NPROC > 1 the CNN runs get --batch-size 512/NPROC, keeping
# mdistiller's global 512 (one DataParallel batch); the DeiT runs keep 512 per process, as VkD's 512 per GPU on 1-2 GPUs.
# The papers' ImageNet numbers are single runs, hence SEEDS=0.
#
# Usage: scripts/cls_imagenet.sh    (no arguments; everything is set through the environment)
#   env: DATA_ROOT (data/imagenet), RUNS (runs/cls_imagenet), SEEDS ("0"),
#        PAIRS ("resnet34:resnet18 resnet50:mobilenet_v1 resnet50:mobilenet_v2"; "" = no CNN runs),
#        METHODS ("kd kd-zscore dkd dkd-zscore dcd dcd+kd"; for the CNN pairs), R50_TEACHER (timm/resnet50.tv_in1k),
#        VKD_STUDENTS ("vkd_deit_tiny vkd_deit_small"; "" = no VkD runs),
#        VKD_TEACHER (timm/regnety_160.deit_in1k), VKD_ABLATION (1), BASELINES (0; 1 = also the students alone),
#        NPROC (GPUs for torchrun, 1), EXTRA (more options for every training run, e.g. "--workers 16"),
#        OUT (results/cls_imagenet.md), DRY_RUN (1: print every command instead of running it; no GPU/data checks).
set -euo pipefail
source "$(dirname "$0")/cls_common.sh"

NAME=cls_imagenet.sh
usage="usage: scripts/$NAME (no arguments; env DATA_ROOT RUNS SEEDS PAIRS METHODS R50_TEACHER VKD_STUDENTS VKD_TEACHER VKD_ABLATION BASELINES NPROC EXTRA OUT DRY_RUN)"
check_no_arguments "$@"

DATA_ROOT=${DATA_ROOT:-data/imagenet}; RUNS=${RUNS:-runs/cls_imagenet}; SEEDS=${SEEDS:-0}
PAIRS=${PAIRS-"resnet34:resnet18 resnet50:mobilenet_v1 resnet50:mobilenet_v2"}
METHODS=${METHODS:-"kd kd-zscore dkd dkd-zscore dcd dcd+kd"}; R50_TEACHER=${R50_TEACHER:-timm/resnet50.tv_in1k}
VKD_STUDENTS=${VKD_STUDENTS-"vkd_deit_tiny vkd_deit_small"}
VKD_TEACHER=${VKD_TEACHER:-timm/regnety_160.deit_in1k}; VKD_ABLATION=${VKD_ABLATION:-1}; BASELINES=${BASELINES:-0}
NPROC=${NPROC:-1}; OUT=${OUT:-results/cls_imagenet.md}; DRY_RUN=${DRY_RUN:-0}
read -r -a extra <<< "${EXTRA:-}"

# teacher student dkd_beta (teacher "resnet50" stands for R50_TEACHER)
PAIR_TABLE="
resnet34 resnet18     0.5
resnet50 mobilenet_v1 2.0
resnet50 mobilenet_v2 2.0
resnet50 resnet18     0.5
"

# ---- Validate the plan, then refuse without a GPU / data, before anything is launched.
check_pairs_in_table
check_methods
check_nproc
[ -n "${PAIRS// /}${VKD_STUDENTS// /}" ] || die "nothing to run: PAIRS and VKD_STUDENTS are both empty"
[ $((512 % NPROC)) = 0 ] || die "NPROC=$NPROC does not divide mdistiller's global batch 512"
list_pair_members
if [ "$DRY_RUN" != 1 ]; then
  require_gpu_and_cli
  [ -d "$DATA_ROOT/train" ] && [ -d "$DATA_ROOT/val" ] \
    || die "ImageNet missing: expected class folders in $DATA_ROOT/train and $DATA_ROOT/val (set DATA_ROOT)"
fi

start_plan
common=(--dataset imagenet --data-root "$DATA_ROOT" "${extra[@]}")
cnn=(--recipe imagenet); [ "$NPROC" -gt 1 ] && cnn+=(--batch-size $((512 / NPROC)))
# short MODEL: MODEL without its timm/ prefix (for run directory names).
short() { echo "${1#timm/}"; }

# ---- CNN pairs.
if [ "$BASELINES" = 1 ]; then
  for student in $students; do
    launch_seeds "$RUNS/students/$student/ce" distill --student "$student" --method ce "${cnn[@]}" "${common[@]}"
  done
fi
for pair in $PAIRS; do
  teacher=${pair%%:*}; student=${pair#*:}
  read -r _ _ beta <<< "$(pair_row "$teacher" "$student")"
  teacher_model=$teacher; [ "$teacher" = resnet50 ] && teacher_model=$R50_TEACHER
  for method in $METHODS; do
    method_args "$method" "$beta"
    launch_seeds "$RUNS/${teacher}_$student/$method" distill --student "$student" --teacher "$teacher_model" \
      --teacher-pretrained "${args[@]}" "${cnn[@]}" "${common[@]}"
  done
done

# ---- VkD: DeiT students, RegNetY-16GF teacher (Table 1), and the Table 6 ablation on DeiT-Ti.
for student in $VKD_STUDENTS; do
  variants=("vkd|")
  if [ "$VKD_ABLATION" = 1 ] && [ "$student" = vkd_deit_tiny ]; then
    variants+=("vkd-linear|--set vkd.projector=linear" "vkd-nonorm|--set vkd.normalizer=none"
               "vkd-linear-nonorm|--set vkd.projector=linear --set vkd.normalizer=none")
  fi
  if [ "$BASELINES" = 1 ]; then
    launch_seeds "$RUNS/students/$(short "$student")/ce" distill --student "$student" --method ce \
      --recipe deit "${common[@]}"
  fi
  for variant in "${variants[@]}"; do
    read -r -a settings <<< "${variant#*|}"
    launch_seeds "$RUNS/$(short "$VKD_TEACHER")_$(short "$student")/${variant%%|*}" distill \
      --student "$student" --teacher "$VKD_TEACHER" --teacher-pretrained --method vkd "${settings[@]}" \
      --recipe deit "${common[@]}"
  done
done

write_table
