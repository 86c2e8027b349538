"""Section 6, classifier distillation: train-step images/s of a teacher -> student pair with ce / kd / vkd in fp32,
channels_last and bf16."""
from __future__ import annotations

import torch

from benchmarks.context import Context
from benchmarks.gan_trainer import variant_parts
from benchmarks.report import fmt, table
from benchmarks.timing import measure


def section_classifier(ctx: Context) -> list[str]:
    from classifier_kd.distiller import Distiller
    from classifier_kd.models import create_model
    from classifier_kd.recipes import method_defaults, recipe_values
    from kd_core.runtime.precision import resolve_precision

    sizes = ctx.sizes
    teacher_name, student_name = sizes.cls_models
    recipe = recipe_values("cifar100", student_name)
    variants = ("fp32", "channels_last", "bf16")
    for method in ("ce", "kd", "vkd"):
        ctx.log(f"classifier {method}")
        terms = method_defaults("cifar100", method)
        fns, rules, batches = {}, {}, {}
        for variant in variants:
            precision_name, channels_last, _ = variant_parts(variant)
            precision = resolve_precision(precision_name, "cpu")
            memory_format = torch.channels_last if channels_last else torch.contiguous_format
            torch.manual_seed(0)
            teacher = create_model(teacher_name, 100) if terms["losses"] else None
            distiller = Distiller(create_model(student_name, 100), teacher, terms["losses"],
                                  ce_weight=terms["ce_weight"], label_smoothing=terms.get("label_smoothing", 0.0))
            distiller.train()
            if channels_last:
                distiller.to(memory_format=torch.channels_last)
            optimiser = torch.optim.SGD(distiller.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                                        weight_decay=recipe["weight_decay"])
            slow = precision_name == "bf16" and ctx.slow_bf16()
            batch = sizes.cls_batch_bf16 if slow else sizes.cls_batch
            generator = torch.Generator().manual_seed(1)
            images = torch.randn(batch, 3, 32, 32, generator=generator)
            labels = torch.randint(0, 100, (batch,), generator=generator)

            def step(distiller=distiller, optimiser=optimiser, precision=precision, images=images, labels=labels,
                     memory_format=memory_format) -> None:  # the step of classifier_kd.train.fit
                batch_images = images.contiguous(memory_format=memory_format)
                with precision.autocast():
                    _, losses = distiller(batch_images, labels)
                    loss = sum(losses.values())
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()

            fns[variant], batches[variant] = step, batch
            rules[variant] = (lambda name, seconds: sizes.cls_reps_bf16) if slow else ctx.reps_rule()
        timings = measure(fns, lambda name, seconds: rules[name](name, seconds), sizes.warmup)
        for variant, timing in timings.items():
            ctx.classifier[(method, variant)] = (timing, batches[variant])

    bf16_step_estimate = max(ctx.classifier[(m, "bf16")][0].median for m in ("ce", "kd", "vkd")) * (
        sizes.cls_batch / sizes.cls_batch_bf16)
    lines = [f"`classifier_kd.distiller.Distiller`, {teacher_name} → {student_name} (random weights, 100 classes), with "
             f"the terms of `classifier_kd.recipes.method_defaults(\"cifar100\", method)`; one train step = forward "
             f"(under the precision's autocast, the teacher's forward included) + backward + SGD step (the cifar100 "
             f"recipe's lr, momentum, weight decay), random 32×32 images, the three variants of a method interleaved."
             + (f" bf16 without native bf16: batch {sizes.cls_batch_bf16} instead of {sizes.cls_batch} and "
                f"{sizes.cls_reps_bf16} repetitions, since on its fallback kernels a step at batch {sizes.cls_batch} "
                f"would take about {bf16_step_estimate:.0f} s (the slowest batch-{sizes.cls_batch_bf16} step × "
                f"{sizes.cls_batch / sizes.cls_batch_bf16:g}); its images/s are at another batch than fp32's."
                if ctx.slow_bf16() else ""),
             ""]
    rows = []
    for method in ("ce", "kd", "vkd"):
        terms = method_defaults("cifar100", method)
        described = " + ".join([f"{terms['ce_weight']:g}·ce", *(f"{w:g}·{n}" for n, w, _ in terms["losses"])])
        base, base_batch = ctx.classifier[(method, "fp32")]
        base_speed = base_batch / base.median
        for variant in variants:
            timing, batch = ctx.classifier[(method, variant)]
            speed = batch / timing.median
            rows.append([method, described, variant, str(batch), str(timing.reps), fmt(timing.ms), fmt(speed),
                         f"{base_speed / speed:.2f}×"])
    lines += table(["method", "terms", "variant", "batch", "reps", "ms / step", "images/s", "time per image vs fp32"],
                   rows)
    return lines

