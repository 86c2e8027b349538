# Shared by scripts/cls_cifar100.sh, cls_imagenet.sh and cls_cross_arch.sh, which source it with
#   source "$(dirname "$0")/cls_common.sh"
# and set NAME (their file name, the prefix of every message) and usage before calling anything here. It only
# defines functions. They read the scripts' settings (METHODS PAIRS PAIR_TABLE NPROC DRY_RUN DATA_ROOT RUNS SEEDS
# TEACHER_DIR OUT) and set globals the scripts use: cli runs args teachers students teacher_ckpt. Hooks a script
# defines when it uses the functions that call them: teacher_file TEACHER (require_teacher_files, plan_teachers) and
# train_teacher OUT_DIR TEACHER (plan_teachers).

# die MESSAGE...: print "NAME: MESSAGE" on stderr (every refusal is this one line) and exit 2.
die() { echo "$NAME: $*" >&2; exit 2; }

# check_no_arguments "$@": -h/--help prints the usage (exit 0); any argument is refused (settings are env).
check_no_arguments() { case "${1:-}" in -h|--help) echo "$usage"; exit 0;; "") ;; *) die "$usage";; esac; }

# pair_row TEACHER STUDENT: print PAIR_TABLE's row for the pair; fails when the table has none.
pair_row() { awk -v t="$1" -v s="$2" '$1 == t && $2 == s { print; found = 1 } END { exit !found }' <<< "$PAIR_TABLE"; }

# check_pairs_in_table: refuse any teacher:student of PAIRS that PAIR_TABLE does not list.
check_pairs_in_table() {
  local pair
  for pair in $PAIRS; do
    pair_row "${pair%%:*}" "${pair#*:}" > /dev/null || die "unknown pair $pair (see PAIR_TABLE in the script)"
  done
}

# check_methods: refuse any entry of METHODS that method_args (and the scripts) do not know.
check_methods() {
  local method
  for method in $METHODS; do
    case $method in kd|kd-zscore|dkd|dkd-zscore|fitnet|vkd|dcd|dcd+kd|rsd) ;; *) die "unknown method $method";; esac
  done
}

# check_nproc: refuse an NPROC that is not a positive integer.
check_nproc() { [[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "NPROC must be a positive integer, got $NPROC"; }

# list_pair_members: set teachers and students to the distinct teachers and students of PAIRS, in order of first use.
list_pair_members() {
  teachers=$(for pair in $PAIRS; do echo "${pair%%:*}"; done | awk '!seen[$0]++')
  students=$(for pair in $PAIRS; do echo "${pair#*:}"; done | awk '!seen[$0]++')
}

# require_gpu_and_cli [PIP_TARGET]: refuse without a CUDA GPU or classifier-kd (hint: pip install -e PIP_TARGET, .).
require_gpu_and_cli() {
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2> /dev/null \
    || die "no CUDA GPU visible (DRY_RUN=1 prints the commands instead)"
  command -v classifier-kd > /dev/null || die "classifier-kd not on PATH: activate the venv (pip install -e ${1:-.})"
}

# require_cifar100: refuse without CIFAR-100 in torchvision's layout under DATA_ROOT.
require_cifar100() {
  [ -f "$DATA_ROOT/cifar-100-python/train" ] \
    || die "CIFAR-100 missing: expected $DATA_ROOT/cifar-100-python/ (set DATA_ROOT)"
}

# require_teacher_files VERB: with TEACHER_DIR set, refuse a missing teacher_file (hint: unset it to VERB them here).
require_teacher_files() {
  [ -n "$TEACHER_DIR" ] || return 0
  local teacher
  for teacher in $teachers; do
    [ -f "$(teacher_file "$teacher")" ] \
      || die "teacher missing: $(teacher_file "$teacher") (unset TEACHER_DIR to $1 the teachers here)"
  done
}

# start_plan: set cli to classifier-kd (torchrun over NPROC processes when NPROC > 1) and runs to none yet.
start_plan() {
  cli=(classifier-kd)
  if [ "$NPROC" -gt 1 ]; then cli=(torchrun --nproc_per_node "$NPROC" -m classifier_kd.cli); fi
  runs=()
}

# launch OUT_DIR SUBCOMMAND OPTIONS...: add OUT_DIR to runs; print (DRY_RUN) or run it unless it has finished already.
launch() {
  local out=$1; shift
  runs+=("$out")
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "${cli[@]}" "$@" --out "$out"; echo; return; fi
  if [ -f "$out/result.json" ]; then echo "$NAME: $out has finished, skipped" >&2; return; fi
  "${cli[@]}" "$@" --out "$out"
}

# launch_seeds PREFIX SUBCOMMAND OPTIONS...: launch PREFIX_seedS SUBCOMMAND OPTIONS... --seed S for each S in SEEDS.
launch_seeds() {
  local prefix=$1 seed; shift
  for seed in $SEEDS; do launch "${prefix}_seed$seed" "$@" --seed "$seed"; done
}

# plan_teachers: teacher_ckpt[T] = teacher_file T with TEACHER_DIR, else the best checkpoint train_teacher makes.
plan_teachers() {
  declare -gA teacher_ckpt=()
  local teacher
  for teacher in $teachers; do
    if [ -n "$TEACHER_DIR" ]; then
      teacher_ckpt[$teacher]=$(teacher_file "$teacher")
    else
      train_teacher "$RUNS/teachers/$teacher" "$teacher"
      teacher_ckpt[$teacher]=$RUNS/teachers/$teacher/checkpoints/best.pt
    fi
  done
}

# times9 NUMBER: print NUMBER x 9 (the logit standardisation's weight factor; NUMBER may be a decimal).
times9() { awk -v b="$1" 'BEGIN { print b * 9 }'; }

# method_args METHOD [DKD_BETA]: set args to METHOD's distill options; DKD_BETA sets dkd.beta (x 9 with dkd-zscore).
method_args() {
  local beta=${2:-}
  case $1 in
    kd-zscore) args=(--method kd --zscore);;
    dkd) args=(--method dkd); [ -z "$beta" ] || args+=(--set "dkd.beta=$beta");;
    dkd-zscore) args=(--method dkd --zscore); [ -z "$beta" ] || args+=(--set "dkd.beta=$(times9 "$beta")");;
    *) args=(--method "$1");;
  esac
}

# write_table: tabulate every run of runs into OUT with `classifier-kd table` (printed instead under DRY_RUN).
write_table() {
  local table=(classifier-kd table "${runs[@]}" --out "$OUT")
  if [ "$DRY_RUN" = 1 ]; then printf '%q ' "${table[@]}"; echo; else mkdir -p "$(dirname "$OUT")"; "${table[@]}"; fi
}
