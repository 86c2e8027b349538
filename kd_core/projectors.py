"""Projectors that map student features into the teacher's feature space.

The one that matters is :class:`OrthogonalProjector` (VkD, Miles et al., CVPR 2024, §3.1–3.2): a
projection with orthonormal rows or columns, so that it cannot learn a representation of its own and
preserves the intra-batch inner products of the student features (VkD eq. 3–4). The others are the
baselines VkD compares against (linear, MLP), the identity, and RSD's AAD decoupler.

Convention: a projector maps ``(B, in_dim) -> (B, out_dim)`` and computes ``x @ weight.T`` where
``weight`` has shape ``(out_dim, in_dim)``, as ``nn.Linear`` does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

ORTHOGONAL_MAPS = ("matrix_exp", "cayley", "householder")
ORTHOGONAL_INITS = ("identity", "random")


def check_dim(name: str, value) -> int:
    """A feature dimension must be a positive int; anything else is a one-line ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _skew(a: torch.Tensor) -> torch.Tensor:
    return a - a.transpose(-1, -2)


class OrthogonalProjector(nn.Module):
    """Linear map constrained to the Stiefel manifold: orthonormal columns (out >= in) or rows (out < in).

    ``orthogonal_map`` selects the parametrisation:

    * ``matrix_exp`` (default, the paper's): a free square parameter ``A`` of size d = max(in, out),
      ``W = A - A^T`` (skew-symmetric), ``Q = exp(W)`` in SO(d), then ``P = Q[:out, :in]``
      (VkD eq. 5: "project back to the Stiefel manifold by dropping rows"). torch's
      ``matrix_exp`` uses a Padé approximant with scaling and squaring, as the paper suggests.
    * ``cayley``: ``Q = (I - W)(I + W)^-1`` with the same skew ``W`` and truncation (VkD §3.2 names it
      as the costlier alternative: one linear solve per forward).
    * ``householder``: ``torch.nn.utils.parametrizations.orthogonal`` on an ``nn.Linear`` — what the
      authors' released classification code uses (Householder products for non-square weights).

    ``init="identity"`` (default) starts every map as the truncated identity (A = 0); ``init="random"``
    starts from a random orthogonal matrix, which is what the authors' code does (the Q factor of the
    default ``nn.Linear`` init, applied by torch at registration).

    A square ``exp(W)`` or Cayley map spans SO(d), the rotations: a reflection (determinant -1) cannot
    be reached when ``in_dim == out_dim``; with ``out_dim != in_dim`` the truncation reaches every matrix
    with orthonormal columns (rows). The matrix is built once per forward, never per sample. When ``out_dim >= in_dim`` the map is an
    isometry: ``<Px, Py> = <x, y>``; when ``out_dim < in_dim`` it is a co-isometry (``P P^T = I``).
    """

    def __init__(self, in_dim: int, out_dim: int, orthogonal_map: str = "matrix_exp", init: str = "identity"):
        super().__init__()
        self.in_dim = check_dim("in_dim", in_dim)
        self.out_dim = check_dim("out_dim", out_dim)
        if orthogonal_map not in ORTHOGONAL_MAPS:
            raise ValueError(f"unknown orthogonal_map {orthogonal_map!r}; allowed: {', '.join(ORTHOGONAL_MAPS)}")
        if init not in ORTHOGONAL_INITS:
            raise ValueError(f"unknown init {init!r}; allowed: {', '.join(ORTHOGONAL_INITS)}")
        self.orthogonal_map = orthogonal_map
        if orthogonal_map == "householder":
            linear = nn.Linear(in_dim, out_dim, bias=False)
            self.linear = parametrizations.orthogonal(linear, orthogonal_map="householder")
            if init == "identity":
                with torch.no_grad():
                    # Assigning goes through the parametrization's right_inverse, so the weight is
                    # exactly the truncated identity (itself orthogonal).
                    self.linear.weight = torch.eye(out_dim, in_dim)
        else:
            size = max(in_dim, out_dim)
            self.generator = nn.Parameter(torch.zeros(size, size))
            if init == "random":
                # A skew matrix with entries of order pi rotates far from identity: a random start.
                nn.init.uniform_(self.generator, -torch.pi / 2, torch.pi / 2)

    @property
    def weight(self) -> torch.Tensor:
        """The current ``(out_dim, in_dim)`` matrix with orthonormal columns or rows."""
        if self.orthogonal_map == "householder":
            return self.linear.weight
        skew = _skew(self.generator)
        if self.orthogonal_map == "matrix_exp":
            square = torch.linalg.matrix_exp(skew)
        else:
            eye = torch.eye(skew.shape[0], dtype=skew.dtype, device=skew.device)
            # (I - W)(I + W)^-1 = (I + W)^-1 (I - W): both are functions of W and commute.
            square = torch.linalg.solve(eye + skew, eye - skew)
        return square[: self.out_dim, : self.in_dim]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        return F.linear(features.to(weight.dtype), weight)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, orthogonal_map={self.orthogonal_map}"


class LinearProjector(nn.Linear):
    """Unconstrained linear map (FitNets-style regressor; the "linear" row of VkD's ablation)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__(check_dim("in_dim", in_dim), check_dim("out_dim", out_dim), bias=bias)


class MLPProjector(nn.Sequential):
    """Two-layer MLP ``Linear -> ReLU -> Linear`` (the expressive projector VkD argues against)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None):
        check_dim("in_dim", in_dim)
        check_dim("out_dim", out_dim)
        hidden_dim = check_dim("hidden_dim", hidden_dim if hidden_dim is not None else max(in_dim, out_dim))
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class IdentityProjector(nn.Identity):
    """No projection; only valid when the student and teacher dimensions agree."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        check_dim("in_dim", in_dim)
        check_dim("out_dim", out_dim)
        if in_dim != out_dim:
            raise ValueError(f"identity projector needs in_dim == out_dim, got {in_dim} and {out_dim}")


class AADProjector(nn.Sequential):
    """RSD's decoupler (expander + adaptor): ``Linear(d_s, 2 d_s) -> BatchNorm1d -> GELU -> Linear(-> d_t)``.

    No biases; linear weights truncated-normal with std 0.02, BatchNorm at its default init, as in the
    RSD authors' code (``distillers/rsd.py``). It is trained with the student and discarded afterwards.
    """

    def __init__(self, in_dim: int, out_dim: int, expansion: int = 2):
        check_dim("in_dim", in_dim)
        check_dim("out_dim", out_dim)
        hidden = check_dim("expansion", expansion) * in_dim
        super().__init__(
            nn.Linear(in_dim, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.GELU(),
            nn.Linear(hidden, out_dim, bias=False),
        )
        for layer in (self[0], self[3]):
            nn.init.trunc_normal_(layer.weight, std=0.02)
