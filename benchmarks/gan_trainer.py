"""A :class:`gan_kd.train.Trainer` built and stepped as ``gan-kd train`` builds and steps it, without a dataset or a
run directory: what sections 1 and 2 time."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch

from benchmarks.context import Context

GAN_PRESETS = ("da", "vkd-whiten")


def variant_parts(variant: str) -> tuple[str, bool, bool]:
    """(precision, channels_last, compile) of a variant's name, e.g. ``compile+bf16+channels_last``."""
    return ("bf16" if "bf16" in variant else "fp32"), "channels_last" in variant, "compile" in variant


@contextlib.contextmanager
def random_clip_weights():
    """``gan_kd.teacher`` builds its CLIP teacher from ``open_clip.create_model(name, pretrained=None)``:
    random weights (a random CLIP costs exactly what a trained one does) without any weights file."""
    import open_clip

    from gan_kd import teacher as teacher_module

    original = teacher_module._load_clip
    teacher_module._load_clip = lambda name, pretrained, weights: open_clip.create_model(name, pretrained=None,
                                                                                         device="cpu")
    try:
        yield
    finally:
        teacher_module._load_clip = original


def build_gan_trainer(ctx: Context, preset: str, width: int, variant: str, batch: int, *, teacher: str | None = None):
    """A :class:`gan_kd.train.Trainer` holding what its D and G steps use, built as ``Trainer.__init__`` does
    (teacher, then ``Trainer.build_training_state``, which compiles G, the critic, D and the teacher in place for a
    ``compile`` variant) but without a dataset or run directory."""
    from gan_kd.teacher import build_teacher
    from gan_kd.config import TrainConfig, validate_config
    from gan_kd.presets import PRESETS
    from gan_kd.train import Trainer
    from kd_core.runtime.precision import resolve_precision
    from kd_core.runtime.seed import seed_everything

    precision_name, channels_last, compiled = variant_parts(variant)
    preset_fields = dict(PRESETS[preset])
    distill = preset_fields["distill"]
    config = TrainConfig(preset=preset, **preset_fields, g_ch=width, d_ch=width, batch_size=batch,
                         teacher=(teacher or ctx.teacher_spec) if distill else None, precision=precision_name,
                         channels_last=channels_last, compile=compiled, device="cpu")
    validate_config(config)
    trainer = Trainer.__new__(Trainer)
    trainer.config, trainer.device, trainer.local_batch, trainer.num_classes = config, torch.device("cpu"), batch, 10
    trainer.precision = resolve_precision(config.precision, "cpu")
    trainer.memory_format = torch.channels_last if channels_last else torch.contiguous_format
    seed_everything(0)
    trainer.teacher = None
    if distill:
        weights = __file__ if config.teacher.startswith("clip:") else None  # never read: see random_clip_weights
        trainer.teacher = build_teacher(config.teacher, weights=weights, preprocessing=config.teacher_preprocessing,
                                        bf16=config.teacher_bf16 or trainer.precision.name == "bf16")
        trainer.teacher.to(trainer.device, memory_format=trainer.memory_format)
    trainer.build_training_state()
    generator = torch.Generator().manual_seed(1)
    # Trainer.run moves each real batch to the memory format before the D step; done once here.
    trainer.bench_real = (torch.rand(batch, 3, 32, 32, generator=generator) * 2 - 1).contiguous(
        memory_format=trainer.memory_format)
    trainer.bench_labels = torch.randint(0, trainer.num_classes, (batch,), generator=generator)
    return trainer


def gan_iteration(trainer, d_steps: int = 1, ema: bool = False) -> Callable[[], dict]:
    """One iteration as ``Trainer.run`` does it: ``d_steps`` D steps, one G step (and the EMA update)."""
    from gan_kd.train import ema_update

    def step() -> dict:
        start = time.perf_counter()
        trainer.generator.requires_grad_(False)
        trainer.critic.requires_grad_(True)
        for _ in range(d_steps):
            trainer.discriminator_step(trainer.bench_real, trainer.bench_labels, 1)
        middle = time.perf_counter()
        trainer.critic.requires_grad_(False)
        trainer.generator.requires_grad_(True)
        trainer.generator_step(1)
        if ema:
            ema_update(trainer.generator_ema, trainer.generator, trainer.config.ema_decay)
        end = time.perf_counter()
        return {"d": (middle - start) / d_steps, "g": end - middle}

    return step
