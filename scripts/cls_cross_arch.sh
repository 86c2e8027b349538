#!/usr/bin/env bash
# RSD (Zhang et al., ICCV 2025) Table 1: cross-architecture distillation on CIFAR-100 upsampled to 224 (the OFA
# protocol), the 12 teacher -> student pairs of the table, method RSD (and optionally KD or others), three seeds
# each, plus the students trained alone ("From Scratch S.") and, unless given, the teachers; best test top-1 over
# seeds, tabulated into results/cls_cross_arch.md.
#
#   CNN students (recipe cross-arch-cnn: SGD, cosine, 300 epochs, batch 128):
#     swin_t:resnet18 vit_s:resnet18 mixer_b16:resnet18 swin_t:mobilenetv2 vit_s:mobilenetv2 mixer_b16:mobilenetv2
#   Transformer / MLP students (recipe cross-arch-vit: AdamW, cosine, 300 epochs, batch 128, mixup/cutmix):
#     convnext_t:deit_t mixer_b16:deit_t convnext_t:swin_p mixer_b16:swin_p convnext_t:resmlp_s12 swin_t:resmlp_s12
#   Names: swin_t timm/swin_tiny_patch4_window7_224, vit_s timm/vit_small_patch16_224, mixer_b16 timm/mixer_b16_224,
#   convnext_t timm/convnext_tiny (teachers); resnet18 timm/resnet18, mobilenetv2 timm/mobilenetv2_100, deit_t
#   timm/deit_tiny_patch16_224, swin_p timm/swin_pico_patch4_window7_224 (OFA's Swin-Pico, built by our zoo),
#   resmlp_s12 timm/resmlp_12_224 (students, from scratch, as OFA's timm 0.6.5 models).
#
# Needs a CUDA GPU, CIFAR-100 under $DATA_ROOT (torchvision layout: $DATA_ROOT/cifar-100-python/) and the teachers:
# with TEACHER_DIR set, the CIFAR-100 fine-tuned checkpoints RSD distributes, named as its train.sh names them
# ($TEACHER_DIR/<timm name>_cifar100.pth: swin_tiny_patch4_window7_224_cifar100.pth, vit_small_patch16_224_cifar100.pth,
# mixer_b16_224_cifar100.pth, convnext_tiny_cifar100.pth; RSD reports them at 89.26 / 92.44 / 87.62 / 88.42); without
# it, each teacher is first fine-tuned here from its timm ImageNet weights (`train-teacher --pretrained`, recipe
# cross-arch-cnn for ConvNeXt-T, cross-arch-vit for the others: the students' recipes, as RSD/OFA do not publish how
# their teachers were fine-tuned) into $RUNS/teachers/<name>. The recipes' batch 128 is per process (RSD: 128 per GPU).
# RSD's teacher files are bare timm 0.6.5 state_dicts fine-tuned at 224 px that record no input size (our loader would
# take them for 32 px CIFAR-100 models), so the distill runs using them get --teacher-image-size 224; teachers
# fine-tuned here by train-teacher record their input size and get no flag. Note: timm 0.6.5 Swin checkpoints may use
# older parameter names than timm 1.x (e.g. head.weight for head.fc.weight, layers.0.downsample.* for
# layers.1.downsample.*); strict loading then refuses the file, reporting the mismatched keys: we do not remap them.
#
# Usage: scripts/cls_cross_arch.sh    (no arguments; everything is set through the environment)
#   env: DATA_ROOT (data), RUNS (runs/cls_cross_arch), SEEDS ("0 1 2"), METHODS ("rsd"; e.g. "rsd kd"),
#        PAIRS (all 12, as teacher:student with the short names above), TEACHER_DIR (unset: fine-tune the teachers),
#        TEACHER_SEED (0), BASELINES (1: also train each student alone, `distill --method ce`),
#        NPROC (GPUs for torchrun, 1), EXTRA (more options for every training run, e.g. "--workers 8"),
#        OUT (results/cls_cross_arch.md), DRY_RUN (1: print every command instead of running it; no GPU/data checks).
set -euo pipefail
source "$(dirname "$0")/cls_common.sh"

NAME=cls_cross_arch.sh
usage="usage: scripts/$NAME (no arguments; env DATA_ROOT RUNS SEEDS METHODS PAIRS TEACHER_DIR TEACHER_SEED BASELINES NPROC EXTRA OUT DRY_RUN)"
check_no_arguments "$@"

DATA_ROOT=${DATA_ROOT:-data}; RUNS=${RUNS:-runs/cls_cross_arch}; SEEDS=${SEEDS:-"0 1 2"}; METHODS=${METHODS:-rsd}
TEACHER_DIR=${TEACHER_DIR:-}; TEACHER_SEED=${TEACHER_SEED:-0}; BASELINES=${BASELINES:-1}
NPROC=${NPROC:-1}; OUT=${OUT:-results/cls_cross_arch.md}; DRY_RUN=${DRY_RUN:-0}
read -r -a extra <<< "${EXTRA:-}"
PAIRS=${PAIRS:-"swin_t:resnet18 vit_s:resnet18 mixer_b16:resnet18 swin_t:mobilenetv2 vit_s:mobilenetv2
  mixer_b16:mobilenetv2 convnext_t:deit_t mixer_b16:deit_t convnext_t:swin_p mixer_b16:swin_p convnext_t:resmlp_s12
  swin_t:resmlp_s12"}

declare -A model=(
  [swin_t]=timm/swin_tiny_patch4_window7_224 [vit_s]=timm/vit_small_patch16_224 [mixer_b16]=timm/mixer_b16_224
  [convnext_t]=timm/convnext_tiny [resnet18]=timm/resnet18 [mobilenetv2]=timm/mobilenetv2_100
  [deit_t]=timm/deit_tiny_patch16_224 [swin_p]=timm/swin_pico_patch4_window7_224 [resmlp_s12]=timm/resmlp_12_224
)
declare -A recipe=(
  [swin_t]=cross-arch-vit [vit_s]=cross-arch-vit [mixer_b16]=cross-arch-vit [convnext_t]=cross-arch-cnn
  [resnet18]=cross-arch-cnn [mobilenetv2]=cross-arch-cnn [deit_t]=cross-arch-vit [swin_p]=cross-arch-vit
  [resmlp_s12]=cross-arch-vit
)
# teacher_file TEACHER: RSD's checkpoint under TEACHER_DIR, named as its train.sh names it (cls_common.sh's hook).
teacher_file() { echo "$TEACHER_DIR/${model[$1]#timm/}_cifar100.pth"; }
# train_teacher OUT_DIR TEACHER: fine-tune it here from timm's ImageNet weights (cls_common.sh's plan_teachers hook).
train_teacher() {
  launch "$1" train-teacher --model "${model[$2]}" --pretrained --recipe "${recipe[$2]}" "${common[@]}" \
    --seed "$TEACHER_SEED"
}

# ---- Validate the plan, then refuse without a GPU / data / teachers, before anything is launched.
for pair in $PAIRS; do
  [[ "$pair" =~ ^[a-z0-9_]+:[a-z0-9_]+$ ]] && [ -n "${model[${pair%%:*}]:-}" ] && [ -n "${model[${pair#*:}]:-}" ] && [ "${pair%%:*}" != "${pair#*:}" ] \
    || die "unknown pair $pair (teachers swin_t vit_s mixer_b16 convnext_t; students resnet18 mobilenetv2 deit_t swin_p resmlp_s12)"
done
check_methods
check_nproc
list_pair_members
if [ "$DRY_RUN" != 1 ]; then
  require_gpu_and_cli ".[imagenet]"
  require_cifar100
  require_teacher_files fine-tune
fi

start_plan
common=(--dataset cifar100 --data-root "$DATA_ROOT" "${extra[@]}")
# RSD's teacher files record no input size: they were fine-tuned at 224 px.
teacher_size=(); [ -z "$TEACHER_DIR" ] || teacher_size=(--teacher-image-size 224)

# ---- Teachers: fine-tuned here from ImageNet weights (one seed) unless TEACHER_DIR has them.
plan_teachers

# ---- Students alone (the table's "From Scratch S." column).
if [ "$BASELINES" = 1 ]; then
  for student in $students; do
    launch_seeds "$RUNS/students/$student/ce" distill --student "${model[$student]}" --method ce \
      --recipe "${recipe[$student]}" "${common[@]}"
  done
fi

# ---- Distillation (the student's recipe).
for pair in $PAIRS; do
  teacher=${pair%%:*}; student=${pair#*:}
  for method in $METHODS; do
    method_args "$method"
    launch_seeds "$RUNS/${teacher}_$student/$method" distill --student "${model[$student]}" \
      --teacher "${model[$teacher]}" --teacher-ckpt "${teacher_ckpt[$teacher]}" "${teacher_size[@]}" "${args[@]}" \
      --recipe "${recipe[$student]}" "${common[@]}"
  done
done

write_table
