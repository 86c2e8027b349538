"""Benchmarks of the training and evaluation paths on this machine -> ``results/benchmarks.md`` (``make bench``).

One command, one thread: every timed region runs with ``torch.set_num_threads(1)``. Each number is the
median of the timed repetitions after warm-up (the row says how many); variants that are compared with each
other (fp32 / channels_last / bf16, or the methods of one table) are built side by side and their repetitions
are interleaved, so that a change of machine load during the run hits all of them alike. The file's header
records the machine, the torch version, whether the CPU has native bf16, the load average before and after
the run (with a warning when another process competed for the cores) and the exact command. Every number in
the file comes from the run that wrote it, including the verdicts of the "Targets" section.

Sections (``--sections`` runs a subset, comma-separated):

* ``gan``: a GAN iteration as :class:`gan_kd.train.Trainer` runs it (its own ``discriminator_step`` and
  ``generator_step``), presets ``da`` / ``vkd-whiten``, widths 8 / 64, fp32 / channels_last / bf16 /
  bf16+channels_last, with FLOPs (``FlopCounterMode``) and their fraction of the peak. Then the modes tables
  (issue 26): the study's iteration (4 D steps + 1 G step + EMA) at its size (width 8, batch 16) and at width 64,
  eager / ``--compile`` x contiguous / channels_last x fp32 / bf16 (bf16 only where the CPU has native bf16) side
  by side, each as a ratio to eager fp32 with its compile seconds, and which mode is fastest. The peak every
  fraction is of: the largest of the theoretical fp32 FMA peak (flags x clock), the conv and matmul peaks measured
  over a sweep of sizes and every GFLOP/s the section reports, so that no fraction exceeds 100%.
* ``distill``: what ``vkd-whiten`` adds to a ``da`` iteration: teacher forward, projector, whitening, loss.
* ``projector``: every orthogonal map of :data:`kd_core.projectors.ORTHOGONAL_MAPS`, speed and orthonormality.
* ``whiten``: :class:`kd_core.normalizers.Whitener` and :func:`~kd_core.normalizers.zca_whitening_matrix`.
* ``eval``: :mod:`gan_kd.metrics.evaluator` throughput for the domain FD and the Evaluator's set-up cost.
* ``classifier``: train-step images/s of resnet32x4 -> resnet8x4 with ce / kd / vkd.
* ``metrics``: ``Evaluator.score`` on 10,000 samples with the real features cached, every metric but GAN-train
  accuracy (budget 90 s) and GAN-train accuracy (budget 3 min), with a per-metric breakdown (about 13 minutes
  of the full run: the set-up alone computes the features of 20,000 real images, and each budgeted call is
  timed 3 times).

``--quick`` runs the same sections with tiny sizes and one or two repetitions (a smoke test: its numbers
mean nothing), and does not time the compile modes (their rows say so): inductor's first compilation of a
trainer takes minutes, however small the model.

Layout (one job a module): :mod:`~benchmarks.cli` parses the options, runs the sections and writes the file;
:mod:`~benchmarks.context` holds the sizes of the full and the ``--quick`` run and what the sections share;
:mod:`~benchmarks.timing` times (interleaved repetitions, parts of a call, FLOPs); :mod:`~benchmarks.report`
formats numbers and markdown tables; :mod:`~benchmarks.load` watches the load average and logs progress;
:mod:`~benchmarks.machine` describes the CPU (model, SIMD flags, clock, theoretical peak); :mod:`~benchmarks.peak`
measures the peaks and takes the denominator of every "of peak" fraction; :mod:`~benchmarks.gan_trainer` builds and
steps a GAN trainer as ``gan-kd train`` does. One module a section: :mod:`~benchmarks.gan` (with its modes tables in
:mod:`~benchmarks.gan_modes`), :mod:`~benchmarks.distill`, :mod:`~benchmarks.projector`, :mod:`~benchmarks.whiten`,
:mod:`~benchmarks.evaluation`, :mod:`~benchmarks.classifier`, :mod:`~benchmarks.metrics`, and
:mod:`~benchmarks.targets` for the verdicts. ``scripts/bench.py`` and ``python -m benchmarks`` run
:func:`benchmarks.cli.main`.
"""
import os

# One thread for numpy's OpenBLAS too (the Fréchet distances' eigvals, KID's kernel products): read when numpy
# loads (with torch, which the package's modules import after this one has run), it would otherwise start a thread
# per core, which on a busy or pinned core makes these calls several times slower, not faster.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
# The benchmark times computing the real sets' features (section 5's throughput, section 7's set-up): the on-disk
# cache of gan_kd.metrics.cache would turn those into file reads (and section 5's rate into a division by zero).
os.environ["KD_METRICS_CACHE"] = "off"
