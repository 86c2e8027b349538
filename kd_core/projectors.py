"""Projectors that map student features into the teacher's feature space.

The one that matters is :class:`OrthogonalProjector` (VkD, Miles et al., CVPR 2024, §3.1–3.2): a
projection with orthonormal rows or columns, so that it cannot learn a representation of its own and
preserves the intra-batch inner products of the student features (VkD eq. 3–4). The others are the
baselines VkD compares against (linear, MLP), the identity, and RSD's AAD decoupler.

Convention: a projector maps ``(B, in_dim) -> (B, out_dim)`` and computes ``x @ weight.T`` where
``weight`` has shape ``(out_dim, in_dim)``, as ``nn.Linear`` does.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils import parametrizations

from kd_core.registry import check_dim, register  # noqa: F401 (check_dim: re-exported)

ORTHOGONAL_MAPS = ("qr", "matrix_exp", "cayley", "householder")  # the first is the default
ORTHOGONAL_INITS = ("identity", "random")


def _skew(a: torch.Tensor) -> torch.Tensor:
    return a - a.transpose(-1, -2)


def _without_autocast(device_type: str):
    """The orthogonal matrix is built in float32 or float64, never in an autocast dtype."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _orthonormalise(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q, R)`` of the reduced QR decomposition of a tall ``(m, n)`` matrix, signs fixed so diag(R) > 0.

    With that sign convention the factorisation is unique and ``Q`` a smooth function of the matrix
    wherever it has full column rank. Householder QR (LAPACK ``geqrf`` + ``orgqr``) costs O(m n^2). In
    float32 its ``Q`` is orthonormal only to about 1e-6 (``||Q^T Q - I||`` measured up to 0.9e-6 at
    3024 x 192 and 1.4e-6 at 2048 x 1024), so one Newton–Schulz step ``Q <- Q - Q E / 2`` with
    ``E = Q^T Q - I`` formed in float64 brings ``||Q^T Q - I||`` down to the rounding of the float32
    entries (~4e-8): one float64 product of the same O(m n^2) size; ``Q E`` may stay in float32 since
    ``E`` is ~1e-6. Float64 input needs no correction.
    """
    q, r = torch.linalg.qr(matrix)
    signs = torch.where(torch.diagonal(r) < 0, -1.0, 1.0).to(matrix.dtype)
    q, r = q * signs, r * signs[:, None]
    if q.dtype != torch.float64:
        q64 = q.double()
        error = q64.mT @ q64
        error.diagonal().sub_(1.0)
        q = q - q @ (error / 2).to(q.dtype)
    return q, r


def _qr_backward(grad_q: torch.Tensor, q: torch.Tensor, r_inverse: torch.Tensor | None) -> torch.Tensor:
    """``dL/dA = (G + Q copyltu(M)) R^-T`` for ``A = QR`` and a loss of ``Q`` alone, ``M = -G^T Q``.

    ``copyltu(M)`` is the symmetric matrix with M's lower triangle: the reduced-QR derivative torch's
    ``linalg_qr_backward`` uses, with a zero cotangent for ``R``. ``r_inverse=None`` means ``R = I``.
    """
    m = -(grad_q.mT @ q)
    grad = grad_q + q @ (m.tril() + m.tril(-1).mT)
    return grad if r_inverse is None else grad @ r_inverse.mT


class _OrthonormalColumns(torch.autograd.Function):
    """``(Q, R)`` of :func:`_orthonormalise` as a differentiable function of any full-rank tall matrix.

    ``R`` is returned for the backward only (not differentiable). The backward forms ``R^-1`` explicitly
    (n^3 / 3) so that the m x n work is two matrix products rather than a slower triangular solve; the
    float64 correction of the forward is not differentiated. Written for torch.func transforms too.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _orthonormalise(matrix)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, r = output
        ctx.mark_non_differentiable(r)
        ctx.save_for_backward(q, r)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_q: torch.Tensor, grad_r: torch.Tensor | None) -> torch.Tensor:
        q, r = ctx.saved_tensors
        eye = torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)
        return _qr_backward(grad_q, q, torch.linalg.solve_triangular(r, eye, upper=True))


class _AtOrthonormalColumns(torch.autograd.Function):
    """``Q`` of a matrix that already has orthonormal columns (so ``R = I`` and ``Q`` is the matrix itself),
    with the QR derivative at that point: no factorisation, two matrix products in the backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(matrix: torch.Tensor) -> torch.Tensor:
        return matrix.clone()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_q: torch.Tensor) -> torch.Tensor:
        q, = ctx.saved_tensors
        return _qr_backward(grad_q, q, None)


@register("projector", "orthogonal")
class OrthogonalProjector(nn.Module):
    """Linear map constrained to the Stiefel manifold: orthonormal columns (out >= in) or rows (out < in).

    ``orthogonal_map`` selects the parametrisation:

    * ``qr`` (default): a ``(max(in, out), min(in, out))`` parameter ``basis``; the weight is the ``Q``
      factor of its reduced QR decomposition with the signs fixed so that ``R`` has a positive diagonal
      (unique, and smooth wherever ``basis`` has full rank), transposed when ``out < in``: the weight
      orthonormalises the columns of ``basis``. It costs O(out in^2) for tall maps (O(in out^2) for wide
      ones), stores in x out numbers, and is orthonormal to float32 rounding (``||W^T W - I|| <= 1e-6``
      after training, from one float64 correction step; see :func:`_orthonormalise`).
    * ``matrix_exp`` (the paper's, VkD eq. 5): a free square parameter ``generator`` of size
      d = max(in, out), ``W = A - A^T`` (skew-symmetric), ``Q = exp(W)`` in SO(d), then ``P = Q[:out, :in]``
      ("project back to the Stiefel manifold by dropping rows"). torch's ``matrix_exp`` uses a Padé
      approximant with scaling and squaring, as the paper suggests.
    * ``cayley``: ``Q = (I - W)(I + W)^-1`` with the same skew ``W`` and truncation (VkD §3.2 names it
      as the costlier alternative: one linear solve per forward).
    * ``householder``: ``torch.nn.utils.parametrizations.orthogonal`` on an ``nn.Linear`` — what the
      authors' released classification code uses (Householder products for non-square weights).

    Why the default is not the paper's map: VkD §3.2 prefers the exponential to a QR decomposition,
    expecting QR to need "expensive iterative algorithms, such as the Gram Schmidt process". Householder
    QR is direct and costs O(out in^2), whereas the exponential works on the full d x d square: at
    192 -> 3024 (DeiT-Ti -> RegNetY-160) it trains a 3024 x 3024 generator (9.1M parameters for a map
    of 0.58M) and every step costs O(3024^3). Measured on one CPU thread, forward + backward at batch
    100 after a few optimiser steps: 256 -> 512 about 360 ms with ``matrix_exp`` against 12-16 ms with
    ``qr``; 192 -> 3024 about 85 s against 40-55 ms. In float32 ``matrix_exp`` also drifts from
    orthonormality (``||W^T W - I||`` 2-6e-5 once it has moved off the identity) where ``qr`` stays
    below 1e-6. ``matrix_exp`` stays available to reproduce the paper.

    Retraction (``qr`` only): ``W`` does not change when ``basis`` is multiplied on the right by an upper
    triangular matrix with a positive diagonal, so the optimiser can move ``basis`` along those
    directions for free — Adam does, as its per-coordinate scaling does not keep the step orthogonal to
    them — and ``R`` drifts from the identity, which distorts every later step by ``R^-1``. Trained
    that way (Adam, lr 0.05), a projector recovering an 8 x 8 rotation stalls at 9% of its initial loss
    where ``matrix_exp`` converges to 1e-9 in 200 steps. So at the first training forward after
    ``basis`` has changed (an optimiser step, a load), ``basis`` is replaced in place by ``W`` itself —
    the same weight, a point with ``R = I`` — and the weight is then ``basis`` with the QR derivative at
    that point (a QR retraction, as in Riemannian optimisation on the Stiefel manifold). This never
    changes the function ``basis -> W``, only which representative the optimiser steps from; it happens
    only for an ``nn.Parameter`` in float32/float64 under grad mode (``torch.func.functional_call`` with
    plain tensors gets the pure, side-effect-free map). Consequence: weight decay on ``basis`` does not
    change ``W`` (scaling ``basis`` leaves ``W`` unchanged and the next retraction undoes it), whereas
    for ``matrix_exp`` it pulls the map towards the identity.

    ``init="identity"`` (default) starts every map as exactly the truncated identity (``basis = I``,
    ``generator = 0``); ``init="random"`` starts from a random orthonormal matrix (for ``qr`` uniform on
    the Stiefel manifold: the Q factor of a Gaussian matrix), which is what the authors' code does (the
    Q factor of the default ``nn.Linear`` init, applied by torch at registration).

    A square ``exp(W)`` or Cayley map spans SO(d), the rotations: a reflection (determinant -1) cannot
    be reached when ``in_dim == out_dim``. A square ``qr`` map has ``det W = sign(det(basis))``: started
    from the identity it stays in SO(d) unless one step carries ``basis`` across a singular matrix. With
    ``out_dim != in_dim`` every map reaches every matrix with orthonormal columns (rows). When
    ``out_dim >= in_dim`` the map is an isometry: ``<Px, Py> = <x, y>``; when ``out_dim < in_dim`` it is a
    co-isometry (``P P^T = I``).

    Precision: the matrix is built with autocast disabled, in float32 (float64 if the parameters are
    float64), so a forward under bfloat16 autocast still gets a float32-orthonormal ``weight``; the
    product with the features follows the caller's autocast (the losses call it with autocast off).

    When the matrix is built: under grad mode with trainable parameters the weight is never cached and
    never read from the cache. For ``matrix_exp``, ``cayley`` and ``householder`` it is built on every
    access, so a training step with one forward builds it exactly once (call the projector once per
    step, not once per chunk of the batch); for ``qr`` the factorisation runs once per optimiser step (at
    the retraction) and further forwards in the same step cost a copy. Under ``no_grad`` or
    ``inference_mode`` (evaluation) the weight is cached, keyed on each parameter's version counter,
    storage, device and dtype: an optimiser step, ``load_state_dict``, ``.to()`` or any in-place update
    invalidates it. A write through ``.data`` bypasses the version counter and is not seen.
    """

    def __init__(self, in_dim: int, out_dim: int, orthogonal_map: str = ORTHOGONAL_MAPS[0], init: str = "identity"):
        super().__init__()
        self.in_dim = check_dim("in_dim", in_dim)
        self.out_dim = check_dim("out_dim", out_dim)
        if orthogonal_map not in ORTHOGONAL_MAPS:
            raise ValueError(f"unknown orthogonal_map {orthogonal_map!r}; allowed: {', '.join(ORTHOGONAL_MAPS)}")
        if init not in ORTHOGONAL_INITS:
            raise ValueError(f"unknown init {init!r}; allowed: {', '.join(ORTHOGONAL_INITS)}")
        self.orthogonal_map = orthogonal_map
        self._weight_cache: tuple | None = None  # (key, weight) built under no_grad
        self._retracted_at: tuple | None = None  # (version, storage) of `basis` when it was last set to W
        if orthogonal_map == "householder":
            linear = nn.Linear(in_dim, out_dim, bias=False)
            self.linear = parametrizations.orthogonal(linear, orthogonal_map="householder")
            if init == "identity":
                with torch.no_grad():
                    # Assigning goes through the parametrization's right_inverse, so the weight is
                    # exactly the truncated identity (itself orthogonal).
                    self.linear.weight = torch.eye(out_dim, in_dim)
        elif orthogonal_map == "qr":
            shape = (max(in_dim, out_dim), min(in_dim, out_dim))
            # The identity is its own Q factor (R = I): the start is exact, with no rounding.
            start = torch.eye(*shape) if init == "identity" else _orthonormalise(torch.randn(shape))[0]
            self.basis = nn.Parameter(start)
            self._retracted_at = (self.basis._version, self.basis.data_ptr())  # already orthonormal
        else:
            size = max(in_dim, out_dim)
            self.generator = nn.Parameter(torch.zeros(size, size))
            if init == "random":
                # A skew matrix with entries of order pi rotates far from identity: a random start.
                nn.init.uniform_(self.generator, -torch.pi / 2, torch.pi / 2)

    @property
    def weight(self) -> torch.Tensor:
        """The current ``(out_dim, in_dim)`` matrix with orthonormal columns or rows."""
        parameters = tuple(self.parameters())
        if torch.is_grad_enabled() and any(p.requires_grad for p in parameters):
            return self._build_weight()
        try:
            key = (torch.is_inference_mode_enabled(),
                   *((p._version, p.data_ptr(), p.device, p.dtype) for p in parameters))
        except RuntimeError:  # tensors without a version counter or storage (inference, functorch): no cache
            return self._build_weight()
        if self._weight_cache is None or self._weight_cache[0] != key:
            self._weight_cache = (key, self._build_weight())
        return self._weight_cache[1]

    def _build_weight(self) -> torch.Tensor:
        if self.orthogonal_map == "householder":
            with _without_autocast(self.linear.parametrizations.weight.original.device.type):
                return self.linear.weight
        parameter = self.basis if self.orthogonal_map == "qr" else self.generator
        with _without_autocast(parameter.device.type):
            if self.orthogonal_map == "qr":
                q = self._qr_weight(parameter)
                return q if self.out_dim >= self.in_dim else q.mT
            # float32 at least: matrix_exp and solve have no half-precision kernels worth trusting here.
            if parameter.dtype not in (torch.float32, torch.float64):
                parameter = parameter.float()
            skew = _skew(parameter)
            if self.orthogonal_map == "matrix_exp":
                square = torch.linalg.matrix_exp(skew)
            else:
                eye = torch.eye(skew.shape[0], dtype=skew.dtype, device=skew.device)
                # (I - W)(I + W)^-1 = (I + W)^-1 (I - W): both are functions of W and commute.
                square = torch.linalg.solve(eye + skew, eye - skew)
            return square[: self.out_dim, : self.in_dim]

    def _qr_weight(self, basis: torch.Tensor) -> torch.Tensor:
        """``Q(basis)``, retracting ``basis`` first when training (see the class docstring)."""
        try:
            at_retraction = self._retracted_at == (basis._version, basis.data_ptr())
        except RuntimeError:  # functorch-wrapped or inference tensors: the pure map
            at_retraction = False
        if (not at_retraction and isinstance(basis, nn.Parameter) and torch.is_grad_enabled() and basis.requires_grad
                and basis.dtype in (torch.float32, torch.float64)):
            with torch.no_grad():
                basis.copy_(_orthonormalise(basis)[0])
            self._retracted_at, at_retraction = (basis._version, basis.data_ptr()), True
        if at_retraction:  # basis is its own Q factor: no factorisation
            return _AtOrthonormalColumns.apply(basis)
        return _OrthonormalColumns.apply(basis if basis.dtype in (torch.float32, torch.float64) else basis.float())[0]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A checkpoint written with another map holds another parameter (``generator`` / ``basis`` /
        # ``linear.*``): say which map to build instead of only listing missing and unexpected keys.
        own = {name for name, _ in self.named_parameters()}
        saved = {key[len(prefix):] for key in state_dict if key.startswith(prefix)}
        if strict and saved and not own & saved:
            written = ("qr" if "basis" in saved else "matrix_exp or cayley" if "generator" in saved
                       else "householder" if any(k.startswith("linear.") for k in saved) else None)
            if written is not None:
                where = f"the orthogonal projector at {prefix[:-1]!r}" if prefix else "the orthogonal projector"
                error_msgs.append(f"{where} was saved with orthogonal_map={written} but is built with "
                                  f"{self.orthogonal_map!r}; build it with the map it was saved with")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        return F.linear(features.to(weight.dtype), weight)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, orthogonal_map={self.orthogonal_map}"


@register("projector", "linear")
class LinearProjector(nn.Linear):
    """Unconstrained linear map (FitNets-style regressor; the "linear" row of VkD's ablation)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True):
        super().__init__(check_dim("in_dim", in_dim), check_dim("out_dim", out_dim), bias=bias)


@register("projector", "mlp")
class MLPProjector(nn.Sequential):
    """Two-layer MLP ``Linear -> ReLU -> Linear`` (the expressive projector VkD argues against)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None):
        check_dim("in_dim", in_dim)
        check_dim("out_dim", out_dim)
        hidden_dim = check_dim("hidden_dim", hidden_dim if hidden_dim is not None else max(in_dim, out_dim))
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


@register("projector", "identity")
class IdentityProjector(nn.Identity):
    """No projection; only valid when the student and teacher dimensions agree."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        check_dim("in_dim", in_dim)
        check_dim("out_dim", out_dim)
        if in_dim != out_dim:
            raise ValueError(f"identity projector needs in_dim == out_dim, got {in_dim} and {out_dim}")


@register("projector", "aad")
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
