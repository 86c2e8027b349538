"""Section 3, the orthogonal projectors: speed and orthonormality of every map of
:data:`kd_core.projectors.ORTHOGONAL_MAPS`, cells over the time budget skipped."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.context import Context
from benchmarks.report import fmt, sci, table
from benchmarks.timing import measure, timed_call

CELL_BUDGET_S = 20.0        # a projector cell estimated above this is skipped


def kd_core_default_map() -> str:
    """``OrthogonalProjector``'s default ``orthogonal_map``, read when the bench runs."""
    import inspect

    from kd_core.projectors import OrthogonalProjector

    return inspect.signature(OrthogonalProjector).parameters["orthogonal_map"].default


def map_complexity(name: str, in_dim: int, out_dim: int) -> float:
    """Leading cost of building the weight: square maps work on the max x max matrix, qr/householder on m n^2."""
    big, little = max(in_dim, out_dim), min(in_dim, out_dim)
    return float(big * little * little) if name in ("qr", "householder") else float(big) ** 3


def orthonormality_error(weight: torch.Tensor) -> float:
    w = weight.detach().double()
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    return float((gram - torch.eye(gram.shape[0], dtype=gram.dtype)).abs().max())


def projector_cell(name: str, in_dim: int, out_dim: int, batch: int, adam_steps: int):
    """A projector moved off its identity start by ``adam_steps`` Adam steps, with its timed forward + backward
    and the untimed optimiser step that precedes each call."""
    from kd_core.projectors import OrthogonalProjector

    torch.manual_seed(0)
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map=name)
    x, target, grad_out = torch.randn(batch, in_dim), torch.randn(batch, out_dim), torch.randn(batch, out_dim)
    optimiser = torch.optim.Adam(projector.parameters(), lr=1e-2)
    for _ in range(adam_steps):
        projector.zero_grad(set_to_none=True)
        F.mse_loss(projector(x), target).backward()
        optimiser.step()
    projector.zero_grad(set_to_none=True)

    def forward_backward() -> None:
        projector(x).backward(grad_out)

    def move() -> None:
        optimiser.step()
        projector.zero_grad(set_to_none=True)

    return projector, forward_backward, move


def probe_seconds(name: str, in_dim: int, out_dim: int, batch: int) -> float:
    """One forward + backward at a quarter of each dimension, times 64: every map's cost is cubic under a uniform
    scaling of both dimensions, and the probe's fixed overheads make this an over-estimate."""
    _, forward_backward, move = projector_cell(name, max(1, in_dim // 4), max(1, out_dim // 4), batch, 1)
    forward_backward()
    move()
    seconds, _ = timed_call(forward_backward)
    return 64 * seconds


def section_projector(ctx: Context) -> list[str]:
    from kd_core import projectors

    sizes = ctx.sizes
    maps = tuple(projectors.ORTHOGONAL_MAPS)
    default = kd_core_default_map()
    for name in maps:
        previous: tuple[float, float] | None = None  # (complexity, seconds per call) of the last shape measured
        for shape in sizes.projector_shapes:
            in_dim, out_dim = shape
            complexity = map_complexity(name, in_dim, out_dim)
            per_call = previous[1] * complexity / previous[0] if previous else 0.0
            calls = sizes.adam_steps + sizes.warmup + (sizes.reps if per_call >= sizes.cheap_s else sizes.reps_cheap)
            if per_call * calls <= CELL_BUDGET_S:
                per_call = max(per_call, probe_seconds(name, in_dim, out_dim, sizes.projector_batch))
            calls = sizes.adam_steps + sizes.warmup + (sizes.reps if per_call >= sizes.cheap_s else sizes.reps_cheap)
            if per_call * calls > CELL_BUDGET_S:
                ctx.projector[(name, shape)] = {"skipped": per_call * calls}
                ctx.log(f"projector {name} {in_dim}->{out_dim}: skipped (estimated {per_call * calls:.0f} s)")
                continue
            ctx.log(f"projector {name} {in_dim}->{out_dim}")
            projector, forward_backward, move = projector_cell(name, in_dim, out_dim, sizes.projector_batch,
                                                               sizes.adam_steps)
            timing = measure({"p": forward_backward}, ctx.reps_rule(), sizes.warmup, prepare={"p": move})["p"]
            with torch.no_grad():
                error = orthonormality_error(projector.weight)
            ctx.projector[(name, shape)] = {"timing": timing, "error": error}
            previous = (complexity, timing.median)

    lines = [f"`kd_core.projectors.OrthogonalProjector` for every map in `ORTHOGONAL_MAPS` = `{maps}` (default: "
             f"`{default}`), batch {sizes.projector_batch}, float32, identity start. Each cell: {sizes.adam_steps} Adam "
             f"steps (lr 1e-2, MSE to a random target) move the parameters off the identity, then forward + backward "
             f"is timed with an untimed Adam step before every call (so a map that factorises once per optimiser "
             f"step, as `qr` does, pays for it in every repetition, as in training). ‖WᵀW − I‖∞ (WWᵀ for wide maps) "
             f"of the weight after all the steps, in float64. A cell whose estimated time (the larger of: the map's "
             f"previous shape scaled by its leading cost, max³ for square maps and m·n² for qr/householder; one call "
             f"at a quarter of each dimension × 64) exceeds {CELL_BUDGET_S:.0f} s is skipped.", ""]
    header_row = ["map", "reps", *(f"{i}→{o} ms" for i, o in sizes.projector_shapes),
                  *(f"{i}→{o} ‖·−I‖∞" for i, o in sizes.projector_shapes)]
    rows = []
    for name in maps:
        cells = [ctx.projector[(name, shape)] for shape in sizes.projector_shapes]
        reps = [str(c["timing"].reps) if "timing" in c else "—" for c in cells]
        times = [fmt(c["timing"].ms) if "timing" in c else f"skipped: over budget (est. {c['skipped']:.0f} s)"
                 for c in cells]
        errors = [sci(c["error"]) if "timing" in c else "—" for c in cells]
        rows.append([f"`{name}`" + (" (default)" if name == default else ""), "/".join(reps), *times, *errors])
    lines += table(header_row, rows)
    return lines

