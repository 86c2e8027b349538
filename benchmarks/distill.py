"""Section 2, the distillation overhead: what ``vkd-whiten`` adds to a ``da`` iteration (teacher forward, projector,
whitening, loss), with a resnet20 and a CLIP teacher."""
from __future__ import annotations

import torch

from benchmarks.context import Context
from benchmarks.gan import gan_measure
from benchmarks.gan_trainer import build_gan_trainer, random_clip_weights
from benchmarks.projector import kd_core_default_map
from benchmarks.report import fmt, pct, table
from benchmarks.timing import measure


def distill_parts(ctx: Context, teacher_spec: str) -> dict:
    """Teacher forward, projector forward + backward, whitening and loss of the vkd-whiten D step, timed apart."""
    from gan_kd.diffaug import diff_augment
    from kd_core.losses.feature import feature_distance
    from kd_core.runtime.precision import fp32

    sizes = ctx.sizes
    small = sizes.widths[0]
    trainer = build_gan_trainer(ctx, "vkd-whiten", small, "fp32", sizes.gan_batch, teacher=teacher_spec)
    loss = trainer.critic.distill_loss
    torch.manual_seed(2)
    with torch.no_grad():
        z, labels = trainer._noise(sizes.gan_batch)
        fake = trainer.generator(z, labels).float()
        images = diff_augment(torch.cat([fake, trainer.bench_real]), trainer.config.diffaug)
        features = trainer.critic.discriminator.forward_features(images).float()
    teacher_features = trainer.teacher(images)
    with fp32("cpu"):
        target = loss.normalizer(teacher_features.float())
        student = features.clone().requires_grad_(True)
        projected = loss.projector(student).detach().requires_grad_(True)
    projector_opt = torch.optim.Adam(loss.projector.parameters(), lr=trainer.config.lr_d, betas=(0.0, 0.999))
    projected_grad = torch.randn_like(projected)

    def teacher_forward() -> None:
        trainer.teacher(images)

    def projector() -> None:
        student.grad = None
        with fp32("cpu"):
            loss.projector(student).backward(projected_grad)

    def move_projector() -> None:  # the optimiser step of the previous D step (untimed)
        projector_opt.step()
        projector_opt.zero_grad(set_to_none=True)

    def normaliser() -> None:
        with fp32("cpu"):
            loss.normalizer(teacher_features.float())

    def distance() -> None:
        projected.grad = None
        with fp32("cpu"):
            feature_distance(loss.distance, projected, target).backward()

    fns = {"teacher": teacher_forward, "projector": projector, "normaliser": normaliser, "loss": distance}
    prepare = {"projector": move_projector}
    default_map = kd_core_default_map()
    if default_map != trainer.config.orthogonal_map:  # kd_core's default map on the same features, for comparison
        from kd_core.projectors import OrthogonalProjector

        other = OrthogonalProjector(features.shape[1], teacher_features.shape[1], orthogonal_map=default_map)
        other_opt = torch.optim.Adam(other.parameters(), lr=trainer.config.lr_d, betas=(0.0, 0.999))

        def other_projector() -> None:
            student.grad = None
            with fp32("cpu"):
                other(student).backward(projected_grad)

        def move_other() -> None:
            other_opt.step()
            other_opt.zero_grad(set_to_none=True)

        fns["projector_default"], prepare["projector_default"] = other_projector, move_other
    clip = teacher_spec.startswith("clip:")
    timings = measure(fns, ctx.reps_rule(), sizes.warmup, prepare=prepare,
                      warm={"teacher": lambda: trainer.teacher(images[: sizes.clip_warm_batch])} if clip else None)
    groups = loss.normalizer.groups(*teacher_features.shape)
    return {"dims": (features.shape[1], teacher_features.shape[1]), "groups": [g.stop - g.start for g in groups],
            "timings": timings, "map": trainer.config.orthogonal_map, "batch": images.shape[0],
            "default_map": default_map}


def section_distill(ctx: Context) -> list[str]:
    sizes = ctx.sizes
    small = sizes.widths[0]
    for preset in ("da", "vkd-whiten"):
        gan_measure(ctx, preset, small, sizes.gan_batch, ("fp32", "channels_last"))
    da = ctx.gan[("da", small, sizes.gan_batch, "fp32")]
    vkd = ctx.gan[("vkd-whiten", small, sizes.gan_batch, "fp32")]
    ctx.log("distill: resnet20 teacher parts")
    ctx.distill["resnet20"] = distill_parts(ctx, ctx.teacher_spec)
    ctx.log(f"distill: {sizes.clip_model} teacher parts (random weights)")
    with random_clip_weights():
        ctx.distill["clip"] = distill_parts(ctx, f"clip:{sizes.clip_model}")
    batch = ctx.distill["resnet20"]["batch"]
    lines = [f"Width {small}, fp32, the D batch of {batch} images ({sizes.gan_batch} fake + {sizes.gan_batch} real, "
             f"DiffAugmented). The parts as the vkd-whiten D step computes them: the teacher forward (`no_grad`, "
             f"KD-DLGAN input: nearest-upsampled to the teacher's resolution), the orthogonal projector forward + "
             f"backward on D's pooled feature (an untimed Adam step moves it before every repetition, as training "
             f"does), batch whitening of the teacher features (default groups), the MSE forward + backward. "
             f"Percentages are of one `da` iteration at width {small} (1 D step + 1 G step, batch {sizes.gan_batch}, "
             f"fp32: {fmt(da.ms)} ms, {da.reps} reps, section 1). The CLIP teacher is "
             f"`open_clip.create_model(\"{sizes.clip_model}\", pretrained=None)` (random weights: the same cost as "
             f"trained ones) inside `gan_kd.teacher.ClipTeacher` (warmed up on {sizes.clip_warm_batch} images, "
             f"timed on {batch}).", ""]
    rows = []
    show_default = any("projector_default" in ctx.distill[k]["timings"] for k in ("resnet20", "clip"))
    for key in ("resnet20", "clip"):
        record = ctx.distill[key]
        t = record["timings"]
        parts = {name: t[name].ms for name in ("teacher", "projector", "normaliser", "loss")}
        added = parts["projector"] + parts["normaliser"] + parts["loss"]
        record["added_ms"], record["teacher_ms"] = added, parts["teacher"]
        if "projector_default" in t:
            record["added_default_ms"] = t["projector_default"].ms + parts["normaliser"] + parts["loss"]
        dims = record["dims"]
        groups = record["groups"]
        group_text = "+".join(map(str, groups)) if len(groups) <= 4 else f"{len(groups)} groups of ≤{groups[0]}"
        row = [("resnet20 (`ckpt:`)" if key == "resnet20" else f"{sizes.clip_model} (`clip:`)"),
               f"{dims[0]}→{dims[1]}; {group_text}", f"{t['teacher'].reps}/{t['projector'].reps}",
               *(f"{fmt(parts[n])} ({pct(parts[n] / da.ms)})" for n in ("teacher", "projector"))]
        if show_default:
            value = t["projector_default"].ms if "projector_default" in t else parts["projector"]
            row.append(f"{fmt(value)} ({pct(value / da.ms)})")
        row += [*(f"{fmt(parts[n])} ({pct(parts[n] / da.ms)})" for n in ("normaliser", "loss")),
                f"{fmt(added)} ({pct(added / da.ms)})"]
        if show_default:
            value = record.get("added_default_ms", added)
            row.append(f"{fmt(value)} ({pct(value / da.ms)})")
        row.append(f"{fmt(added + parts['teacher'])} ({pct((added + parts['teacher']) / da.ms)})")
        rows.append(row)
    gan_map, default_map = ctx.distill["resnet20"]["map"], ctx.distill["resnet20"]["default_map"]
    header_row = ["teacher (random weights)", "D → teacher dims; whitening groups", "reps (teacher/others)",
                  "teacher fwd ms", f"projector fwd+bwd ms (`{gan_map}`, the GAN's default)"]
    if show_default:
        header_row.append(f"… with `{default_map}` (kd_core's default)")
    header_row += ["whitening ms", "loss ms", f"all but the teacher ms (`{gan_map}`)"]
    if show_default:
        header_row.append(f"… with `{default_map}`")
    header_row.append(f"sum of parts ms (`{gan_map}`)")
    lines += table(header_row, rows)
    diff = vkd.median - da.median
    lines += [f"Measured as whole iterations (section 1, width {small}, batch {sizes.gan_batch}, fp32): vkd-whiten with "
              f"the resnet20 teacher {fmt(vkd.ms)} ms vs da {fmt(da.ms)} ms, a difference of {fmt(1e3 * diff)} ms "
              f"({pct(diff / da.median)} of da; D step {fmt(vkd.part_ms('d'))} vs {fmt(da.part_ms('d'))} ms). The "
              f"difference also holds D's backward through the distillation term, which the parts do not, and the "
              f"noise of two separate measurements. The {sizes.clip_model} iteration was not timed whole (its "
              f"teacher forward dominates it).", ""]
    return lines

