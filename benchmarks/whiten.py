"""Section 4, whitening: :class:`kd_core.normalizers.Whitener` and the ZCA matrices it computes, their time against
a D step and how white their output is."""
from __future__ import annotations

import math

import torch

from benchmarks.context import Context
from benchmarks.gan import gan_measure
from benchmarks.report import fmt, pct, sci, table
from benchmarks.timing import measure


def section_whiten(ctx: Context) -> list[str]:
    from kd_core.normalizers import Whitener, zca_whitening_matrix

    sizes = ctx.sizes
    small = sizes.widths[0]
    gan_measure(ctx, "da", small, sizes.gan_batch, ("fp32", "channels_last"))
    d_step_ms = ctx.gan[("da", small, sizes.gan_batch, "fp32")].part_ms("d")
    for batch in sizes.whiten_batches:
        for dim in sizes.whiten_dims:
            torch.manual_seed(0)
            mixing = torch.randn(dim, dim) / math.sqrt(dim) + torch.eye(dim)
            features = torch.randn(batch, dim) @ mixing * 3.0 + 1.0  # correlated, off-centre
            for grouping in ("default", "full"):
                whitener = Whitener(group_size=None if grouping == "default" else dim)
                groups = whitener.groups(batch, dim)
                centred = features.double() - features.double().mean(dim=0, keepdim=True)

                def run() -> None:
                    whitener(features)

                def matrices() -> None:
                    for group in groups:
                        zca_whitening_matrix(centred[:, group], whitener.eps)

                covariances = [centred[:, g].T @ centred[:, g] / batch for g in groups]
                covariances = [c + whitener.eps * c.diagonal().mean() * torch.eye(len(c), dtype=c.dtype)
                               for c in covariances]

                def eigh() -> None:  # the LAPACK part of the matrices alone
                    for covariance in covariances:
                        torch.linalg.eigh(covariance)

                t = measure({"w": run, "m": matrices, "e": eigh}, ctx.reps_rule(), sizes.warmup)
                out = whitener(features).double()
                out = out - out.mean(dim=0, keepdim=True)
                cov = out.T @ out / batch
                eye = torch.eye(dim, dtype=cov.dtype)
                block = max(float((cov[g, g] - eye[g, g]).abs().max()) for g in groups)
                ctx.whiten[(batch, dim, grouping)] = {"timing": t["w"], "matrix": t["m"], "eigh": t["e"], "groups": groups,
                                                      "full_error": float((cov - eye).abs().max()), "block_error": block,
                                                      "fraction": t["w"].ms / d_step_ms}
    lines = [f"`kd_core.normalizers.Whitener` forward (float64 inside) and the `zca_whitening_matrix` calls it makes "
             f"(one per group), on correlated off-centre float32 features. `default`: groups of min(D, B // 2); "
             f"`full`: one D×D ZCA (`group_size=D`). With B ≤ D the full covariance is singular: the shrinkage keeps "
             f"the matrix finite but cannot whiten directions the batch does not span, which the ‖cov − I‖∞ columns "
             f"show. ‖cov − I‖∞ of the output: within the whitened groups and over the whole matrix (group whitening "
             f"leaves the correlations between groups alone). \"of a D step\": of a `da` D step at width {small}, "
             f"fp32, batch {sizes.gan_batch} ({fmt(d_step_ms)} ms, section 1).", ""]
    rows = []
    for (batch, dim, grouping), r in ctx.whiten.items():
        sizes_text = "+".join(str(g.stop - g.start) for g in r["groups"])
        if len(r["groups"]) > 4:
            sizes_text = f"{len(r['groups'])} groups of ≤{r['groups'][0].stop - r['groups'][0].start}"
        rows.append([str(batch), str(dim), grouping, sizes_text, str(r["timing"].reps), fmt(r["timing"].ms),
                     fmt(r["matrix"].ms), fmt(r["eigh"].ms), sci(r["block_error"]), sci(r["full_error"]),
                     pct(r["fraction"])])
    lines += table(["batch", "dim", "grouping", "groups", "reps", "Whitener ms", "zca_whitening_matrix ms (all groups)",
                    "of which float64 eigh ms", "‖cov − I‖∞ in groups", "‖cov − I‖∞ whole", "of a D step"], rows)
    return lines

