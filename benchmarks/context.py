"""What the sections share: the sizes of the full run and of ``--quick``, and the :class:`Context` that carries the
work directory, the teacher checkpoint and the measurements one section reuses from another."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.load import Progress
from benchmarks.timing import Timing


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full run and ``--quick``.

    Sections 1-6 of the full run must fit in 10 minutes on a 2-core AVX2 machine (section 7 adds about 13:
    its budgeted calls take a minute or more each at the target's 10,000 samples), where a width-64 iteration at batch 50 takes
    about 30 s on one thread and bf16 convolutions run on fallback kernels (10-25x slower than fp32): hence the
    smaller batches of the width-64 rows and of the bf16 rows, which the tables state.
    """

    quick: bool
    warmup: int
    reps_cheap: int             # timed repetitions of rows whose warm-up call took under cheap_s
    reps: int                   # ... of the others (at least 5 in the full run)
    reps_bf16: int              # bf16 rows on a CPU without native bf16 (at least 3 in the full run)
    cheap_s: float
    gan_batch: int              # the Trainer's batch (50): width-8 rows
    gan_batch_large: int        # batch of the width-64 rows
    gan_batch_bf16: int         # batch of the width-8 bf16 rows (and their fp32 reference) without native bf16
    study_batch: int            # the CPU study's batch (`gan-kd train --batch-size 16`): the modes table at width 8
    modes_reps: int             # timed repetitions of that table (at least 7 in the full run)
    modes_compile: bool         # time the compile modes (inductor's cold compile takes minutes: not with --quick)
    widths: tuple[int, int]     # (small, large): 8 and 64
    clip_model: str
    clip_warm_batch: int        # the CLIP teacher is warmed up on a few images, then timed on the D batch
    projector_shapes: tuple[tuple[int, int], ...]
    projector_batch: int
    adam_steps: int
    whiten_batches: tuple[int, ...]
    whiten_dims: tuple[int, ...]
    eval_real: int | None       # real test images the Evaluator is built on (None: the whole split)
    eval_fake_real: bool        # True: a random in-memory uint8 real set instead of Fashion-MNIST
    eval_generate: tuple[int, int]   # samples generated per repetition at (small, large) width
    eval_features: int          # images per feature-throughput repetition
    eval_call_samples: int      # num_samples of the end-to-end Evaluator call
    cls_models: tuple[str, str]     # (teacher, student)
    cls_batch: int
    cls_batch_bf16: int         # bf16 classifier batch on a CPU without native bf16
    cls_reps_bf16: int
    conv_flops: float           # FLOPs per repetition of D's conv (fp32 / native bf16)
    conv_flops_slow: float      # ... for bf16 without native bf16
    sweep_channels: tuple[int, ...]   # the conv-peak sweep: 3x3 C -> C at 32x32, fp32, both memory formats
    sweep_matmuls: tuple[int, ...]    # the matmul-peak sweep: n x n @ n x n, fp32
    sweep_flops: float          # FLOPs per repetition of a sweep conv
    metrics_samples: int        # images per Evaluator.score call (the budgets' 10,000)
    metrics_reps: int           # timed score calls of each evaluator (one takes about a minute at 10,000)
    metrics_warm: int           # images of the suite evaluator's warm-up call (0: no warm-up)
    metrics_synthetic: bool     # True: a synthetic Fashion-MNIST even where Debian's is installed
    metrics_synthetic_split: tuple[int, int]   # (train, test) images of the synthetic Fashion-MNIST


FULL = Sizes(quick=False, warmup=1, reps_cheap=7, reps=5, reps_bf16=3, cheap_s=0.3, gan_batch=50, gan_batch_large=5,
             gan_batch_bf16=10, study_batch=16, modes_reps=7, modes_compile=True, widths=(8, 64), clip_model="ViT-B-32", clip_warm_batch=10,
             projector_shapes=((256, 512), (512, 512), (192, 3024)), projector_batch=100, adam_steps=3,
             whiten_batches=(50, 100), whiten_dims=(128, 512), eval_real=1000, eval_fake_real=False,
             eval_generate=(500, 10), eval_features=250, eval_call_samples=250,
             cls_models=("resnet32x4", "resnet8x4"), cls_batch=64, cls_batch_bf16=2, cls_reps_bf16=2,
             conv_flops=20e9, conv_flops_slow=0.6e9, sweep_channels=(32, 64, 128, 256),
             sweep_matmuls=(256, 512, 1024, 2048), sweep_flops=4e9, metrics_samples=10_000, metrics_reps=3, metrics_warm=500,
             metrics_synthetic=False, metrics_synthetic_split=(60_000, 10_000))
QUICK = Sizes(quick=True, warmup=1, reps_cheap=2, reps=1, reps_bf16=1, cheap_s=0.3, gan_batch=4, gan_batch_large=2,
              gan_batch_bf16=2, study_batch=4, modes_reps=2, modes_compile=False, widths=(2, 4), clip_model="ViT-S-32-alt", clip_warm_batch=2,
              projector_shapes=((16, 32), (32, 32), (12, 189)), projector_batch=8, adam_steps=1,
              whiten_batches=(10, 20), whiten_dims=(8, 32), eval_real=64, eval_fake_real=True,
              eval_generate=(16, 4), eval_features=16, eval_call_samples=8,
              cls_models=("resnet20", "resnet20"), cls_batch=4, cls_batch_bf16=2, cls_reps_bf16=1,
              conv_flops=2e7, conv_flops_slow=5e6, sweep_channels=(4, 8), sweep_matmuls=(32, 64), sweep_flops=2e7,
              metrics_samples=300, metrics_reps=1, metrics_warm=0,
              metrics_synthetic=True, metrics_synthetic_split=(320, 100))


class Context:
    """What the sections share: sizes, a temp dir with the teacher checkpoint, and measurements to reuse."""

    def __init__(self, sizes: Sizes, workdir: Path, log: Progress):
        from kd_core.runtime.precision import cpu_has_native_bf16

        self.sizes, self.workdir, self.log = sizes, workdir, log
        self.native_bf16 = cpu_has_native_bf16()
        self.gan: dict[tuple[str, int, int, str], Timing] = {}   # (preset, width, batch, variant) -> 1 D + 1 G
        self.gan_flops: dict[tuple[str, int, int], int] = {}
        self.d_conv: dict[tuple[int, str], tuple[float, int, int]] = {}  # (width, variant) -> (GFLOP/s, batch, reps)
        self.sweep: dict[tuple[str, int, str], tuple[float, int, int]] = {}  # (kind, size, layout) -> same
        self.fma: tuple[float | None, str] = (None, "")  # the theoretical fp32 FMA peak (GFLOP/s) and how it was got
        self.peak: tuple[str, float] | None = None  # the denominator of every "of peak" fraction: (what, GFLOP/s)
        self.study: dict[str, Timing] = {}  # variant -> the CPU study configuration's trainer iteration
        self.study_flops = 0
        # the modes tables: (preset, width, batch, mode) -> a 4 D + 1 G + EMA iteration, and a compiled mode's
        # warm-up (seconds compiling, calls, whether its last call compiled nothing)
        self.modes: dict[tuple[str, int, int, str], Timing] = {}
        self.mode_flops: dict[tuple[str, int, int], int] = {}
        self.mode_compile: dict[tuple[str, int, int, str], tuple[float, int, bool]] = {}
        self.mode_recompile: dict[tuple[str, int, int], float] = {}  # seconds compiling during the timed reps
        self.distill: dict[str, dict] = {}
        self.projector: dict[tuple[str, tuple[int, int]], dict] = {}
        self.whiten: dict[tuple[int, int, str], dict] = {}
        self.classifier: dict[tuple[str, str], tuple[Timing, int]] = {}
        self.metrics: dict = {}  # section 7's Evaluator.score timings
        self._teacher_path: Path | None = None

    def slow_bf16(self) -> bool:
        return not self.native_bf16

    def reps_rule(self, slow: bool = False) -> Callable[[str, float], int]:
        """Repetitions from the warm-up call's time: more for cheap rows, fewer (>= 3) for slow bf16 ones."""
        sizes = self.sizes
        return lambda name, seconds: sizes.reps_bf16 if slow else (sizes.reps_cheap if seconds < sizes.cheap_s
                                                                  else sizes.reps)

    @property
    def teacher_spec(self) -> str:
        """``ckpt:PATH`` of a random-weight resnet20 (10 classes) written with ``save_classifier``."""
        if self._teacher_path is None:
            from classifier_kd.dataset_specs import input_spec
            from classifier_kd.models import create_model, save_classifier

            torch.manual_seed(0)
            path = self.workdir / "resnet20_random.pt"
            save_classifier(path, create_model("resnet20", 10), "resnet20", 10, input_spec=input_spec("cifar10"))
            self._teacher_path = path
        return f"ckpt:{self._teacher_path}"
