import pytest
import torch

from kd_core import projectors
from kd_core.projectors import ORTHOGONAL_MAPS, AADProjector, OrthogonalProjector

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # QR/LAPACK threads thrash on the shared 2-core box

SHAPES = [(5, 9), (7, 7), (9, 5)]  # in < out, in = out, in > out
# The recipe shapes: GAN D (256) -> teacher (512), square, wide, DeiT-Ti (192) -> RegNetY-160 (3024).
RECIPE_SHAPES = [(256, 512, 20), (512, 512, 20), (512, 256, 20), (192, 3024, 4)]  # in, out, Adam steps


def gram_error(weight: torch.Tensor, dtype: torch.dtype | None = None) -> float:
    """||W^T W - I||_inf for tall W, ||W W^T - I||_inf for wide W: the Stiefel constraint.

    The Gram matrix is formed in ``dtype`` (default: the weight's); float64 measures the stored matrix
    itself, float32 adds the rounding of the float32 product (~5e-7 at these sizes).
    """
    weight = weight.to(dtype or weight.dtype)
    gram = weight.T @ weight if weight.shape[0] >= weight.shape[1] else weight @ weight.T
    return (gram - torch.eye(gram.shape[0], dtype=gram.dtype)).abs().max().item()


def train_a_few_steps(projector: OrthogonalProjector, steps: int = 8, lr: float = 0.1, batch: int = 32) -> None:
    torch.manual_seed(1)
    target = torch.randn(batch, projector.out_dim)
    inputs = torch.randn(batch, projector.in_dim)
    optimiser = torch.optim.Adam(projector.parameters(), lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        (projector(inputs) - target).pow(2).mean().backward()
        optimiser.step()


def test_default_map_is_qr():
    assert ORTHOGONAL_MAPS[0] == "qr"
    assert OrthogonalProjector(4, 6).orthogonal_map == "qr"


@pytest.mark.parametrize("orthogonal_map", ORTHOGONAL_MAPS)
@pytest.mark.parametrize("in_dim,out_dim", SHAPES)
def test_orthogonal_after_optimiser_steps(orthogonal_map, in_dim, out_dim):
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map=orthogonal_map)
    before = projector.weight.detach().clone()
    train_a_few_steps(projector)
    after = projector.weight.detach()
    assert after.shape == (out_dim, in_dim)
    assert not torch.allclose(before, after), "the optimiser must move the projector"
    assert gram_error(after) < 1e-5


@pytest.mark.parametrize("in_dim,out_dim,steps", RECIPE_SHAPES)
def test_qr_is_exactly_orthonormal_in_float32_after_training(in_dim, out_dim, steps):
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map="qr")
    train_a_few_steps(projector, steps=steps, lr=1e-2, batch=64)
    weight = projector.weight.detach()
    assert weight.dtype == torch.float32 and weight.shape == (out_dim, in_dim)
    assert (weight - torch.eye(out_dim, in_dim)).abs().max() > 0.1, "the optimiser must move the projector"
    assert gram_error(weight) <= 1e-6  # W^T W (tall) or W W^T (wide) formed in float32
    assert gram_error(weight, torch.float64) <= 2e-7  # the float32 matrix itself


@pytest.mark.parametrize("orthogonal_map", ORTHOGONAL_MAPS)
@pytest.mark.parametrize("in_dim,out_dim", SHAPES)
def test_starts_as_truncated_identity(orthogonal_map, in_dim, out_dim):
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map=orthogonal_map)
    assert torch.allclose(projector.weight.detach(), torch.eye(out_dim, in_dim), atol=1e-6)


@pytest.mark.parametrize("in_dim,out_dim", SHAPES + [(192, 3024), (512, 256)])
def test_qr_identity_init_is_exact(in_dim, out_dim):
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map="qr")
    assert torch.equal(projector.weight.detach(), torch.eye(out_dim, in_dim))
    with torch.no_grad():
        assert torch.equal(projector.weight, torch.eye(out_dim, in_dim))


@pytest.mark.parametrize("orthogonal_map", ORTHOGONAL_MAPS)
def test_random_init_is_orthogonal_but_not_identity(orthogonal_map):
    torch.manual_seed(0)
    projector = OrthogonalProjector(6, 10, orthogonal_map=orthogonal_map, init="random")
    weight = projector.weight.detach()
    assert gram_error(weight) < 1e-5
    assert not torch.allclose(weight, torch.eye(10, 6), atol=1e-2)


@pytest.mark.parametrize("orthogonal_map", ORTHOGONAL_MAPS)
@pytest.mark.parametrize("in_dim,out_dim", [(5, 9), (7, 7)])
def test_inner_products_preserved_when_out_at_least_in(orthogonal_map, in_dim, out_dim):
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map=orthogonal_map)
    train_a_few_steps(projector)
    x = torch.randn(16, in_dim)
    with torch.no_grad():
        projected = projector(x)
    # The batch kernel K = X X^T (VkD eq. 1, 3-4) survives the projection.
    assert torch.allclose(projected @ projected.T, x @ x.T, atol=1e-4)


@pytest.mark.parametrize("in_dim,out_dim", [(256, 512), (192, 3024)])
def test_qr_tall_map_is_an_isometry_at_recipe_shapes(in_dim, out_dim):
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map="qr")
    train_a_few_steps(projector, steps=3, lr=1e-2)
    x = torch.randn(16, in_dim, dtype=torch.float64)
    with torch.no_grad():
        projected = x @ projector.weight.double().T
    kernel = x @ x.T
    assert (projected @ projected.T - kernel).abs().max() <= 1e-6 * kernel.abs().max()


def test_wide_projection_is_not_an_isometry():
    projector = OrthogonalProjector(9, 5, init="random")
    x = torch.randn(16, 9)
    with torch.no_grad():
        projected = projector(x)
    assert not torch.allclose(projected @ projected.T, x @ x.T, atol=1e-2)


@pytest.mark.parametrize("orthogonal_map,parameter", [("matrix_exp", "generator"), ("cayley", "generator"),
                                                      ("qr", "basis")])
@pytest.mark.parametrize("in_dim,out_dim", [(3, 4), (4, 3)])
def test_gradcheck_reaches_parameter(orthogonal_map, parameter, in_dim, out_dim):
    torch.manual_seed(0)
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map=orthogonal_map, init="random").double()
    x = torch.randn(5, in_dim, dtype=torch.float64)

    def forward(value):
        return torch.func.functional_call(projector, {parameter: value}, (x,))

    value = getattr(projector, parameter).detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(forward, (value,), eps=1e-6, atol=1e-5)
    projector(x).sum().backward()
    grad = getattr(projector, parameter).grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("in_dim,out_dim", [(64, 256), (256, 64)])
def test_qr_gradients_flow_in_float32(in_dim, out_dim):
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map="qr", init="random")
    inputs = torch.randn(8, in_dim, requires_grad=True)
    projector(inputs).pow(2).sum().backward()
    assert torch.isfinite(projector.basis.grad).all() and projector.basis.grad.abs().sum() > 0
    assert inputs.grad.abs().sum() > 0


def test_householder_gradients_reach_parameters():
    projector = OrthogonalProjector(3, 4, orthogonal_map="householder", init="random").double()
    projector(torch.randn(5, 3, dtype=torch.float64)).sum().backward()
    grads = [p.grad for p in projector.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_matrix_built_once_per_forward(monkeypatch):
    projector = OrthogonalProjector(4, 6, orthogonal_map="matrix_exp")
    calls = []
    original = torch.linalg.matrix_exp
    monkeypatch.setattr(torch.linalg, "matrix_exp", lambda m: calls.append(1) or original(m))
    projector(torch.randn(128, 4))
    assert len(calls) == 1


def test_qr_factorises_once_per_optimiser_step(monkeypatch):
    projector = OrthogonalProjector(4, 6, init="random")
    optimiser = torch.optim.Adam(projector.parameters(), lr=0.1)
    calls = []
    original = torch.linalg.qr
    monkeypatch.setattr(torch.linalg, "qr", lambda *args, **kw: calls.append(1) or original(*args, **kw))
    inputs, target = torch.randn(16, 4), torch.randn(16, 6)
    for step in range(3):
        optimiser.zero_grad()
        for chunk in range(2):  # gradient accumulation: two forwards per step
            (projector(inputs[chunk::2]) - target[chunk::2]).pow(2).sum().backward()
        optimiser.step()
        assert len(calls) == step  # the start is orthonormal already; each step costs one retraction


def test_qr_retraction_keeps_the_weight_and_resets_r():
    projector = OrthogonalProjector(6, 10, init="random")
    optimiser = torch.optim.Adam(projector.parameters(), lr=0.1)
    inputs, target = torch.randn(16, 6), torch.randn(16, 10)
    for _ in range(5):
        optimiser.zero_grad()
        (projector(inputs) - target).pow(2).sum().backward()
        optimiser.step()
        with torch.no_grad():
            before = projector.weight.clone()  # Q of the stepped basis, which is not orthonormal
        assert gram_error(projector.basis.detach()) > 1e-3
        output = projector(inputs)  # the training forward retracts: basis <- Q(basis)
        assert torch.allclose(projector.basis.detach(), before, atol=1e-6)
        assert torch.allclose(output, inputs @ before.T, atol=1e-5)
        assert gram_error(projector.basis.detach()) <= 1e-6


@pytest.mark.parametrize("in_dim,out_dim", [(6, 10), (10, 6)])
def test_qr_gradient_at_the_retraction_is_the_qr_gradient(in_dim, out_dim):
    projector = OrthogonalProjector(in_dim, out_dim, init="random").double()
    x, target = torch.randn(8, in_dim, dtype=torch.float64), torch.randn(8, out_dim, dtype=torch.float64)
    (projector(x) - target).pow(2).sum().backward()  # through the retracted (R = I) path
    basis = projector.basis.detach().clone().requires_grad_(True)  # a plain tensor: the pure QR path
    (torch.func.functional_call(projector, {"basis": basis}, (x,)) - target).pow(2).sum().backward()
    assert torch.allclose(projector.basis.grad, basis.grad, atol=1e-10)


def test_qr_functional_call_does_not_modify_its_inputs():
    projector = OrthogonalProjector(4, 6)
    basis = torch.randn(6, 4, requires_grad=True)
    before = basis.detach().clone()
    torch.func.functional_call(projector, {"basis": basis}, (torch.randn(3, 4),)).sum().backward()
    assert torch.equal(basis.detach(), before) and basis.grad is not None


@pytest.mark.parametrize("in_dim,out_dim", [(4, 6), (6, 4)])
def test_qr_works_under_torch_func_transforms(in_dim, out_dim):
    projector = OrthogonalProjector(in_dim, out_dim, init="random")
    x = torch.randn(3, in_dim)
    basis = projector.basis.detach() + 0.01  # off the manifold: the pure QR map

    def loss(value):
        return (torch.func.functional_call(projector, {"basis": value}, (x,)) - 1).pow(2).sum()

    tracked = basis.clone().requires_grad_(True)
    loss(tracked).backward()
    assert torch.allclose(torch.func.grad(loss)(basis), tracked.grad, atol=1e-5)
    batched = torch.func.vmap(lambda value: torch.func.functional_call(projector, {"basis": value}, (x,)))(
        torch.stack([basis, 2 * basis]))
    assert torch.allclose(batched[0], batched[1], atol=1e-5)  # Q is invariant to scaling


@pytest.mark.parametrize("seed", [0, 1])
def test_qr_recovers_a_rotation_with_adam(seed):
    """With a free basis, Adam drifts along the directions that leave Q unchanged and stalls at ~9% of
    the initial loss on this problem; the retraction makes qr converge like matrix_exp."""
    torch.manual_seed(seed)
    rotation = torch.linalg.qr(torch.randn(8, 8)).Q
    if torch.linalg.det(rotation) < 0:
        rotation[:, 0] = -rotation[:, 0]
    student = torch.randn(64, 8)
    teacher = student @ rotation.T
    projector = OrthogonalProjector(8, 8, orthogonal_map="qr")
    optimiser = torch.optim.Adam(projector.parameters(), lr=0.05)
    first = (projector(student) - teacher).pow(2).mean().item()
    for _ in range(200):
        optimiser.zero_grad()
        value = (projector(student) - teacher).pow(2).mean()
        value.backward()
        optimiser.step()
    assert value.item() < 1e-6 * first


def count_weight_builds(monkeypatch, projector: OrthogonalProjector) -> list:
    calls = []
    original = projector._build_weight
    monkeypatch.setattr(projector, "_build_weight", lambda: calls.append(1) or original())
    return calls


@pytest.mark.parametrize("orthogonal_map", ORTHOGONAL_MAPS)
def test_cache_is_used_under_no_grad_and_invalidated_by_an_optimiser_step(monkeypatch, orthogonal_map):
    projector = OrthogonalProjector(5, 9, orthogonal_map=orthogonal_map, init="random")
    calls = count_weight_builds(monkeypatch, projector)
    with torch.no_grad():
        first = projector.weight
        assert projector.weight is first and len(calls) == 1
        projector(torch.randn(3, 5))
    assert len(calls) == 1
    with torch.inference_mode():
        projector(torch.randn(3, 5))  # inference tensors are cached apart from no_grad ones
    assert len(calls) == 2

    optimiser = torch.optim.SGD(projector.parameters(), lr=0.5)
    # A regression target: ||W x||^2 alone would not move an isometry (its gradient is zero on the manifold).
    (projector(torch.randn(3, 5)) - torch.randn(3, 9)).pow(2).sum().backward()
    optimiser.step()
    with torch.no_grad():
        after = projector.weight
    assert len(calls) == 4  # the grad forward built it, the step invalidated the cache
    assert not torch.allclose(after, first)
    assert torch.equal(after, projector._build_weight().detach())


@pytest.mark.parametrize("orthogonal_map", ORTHOGONAL_MAPS)
def test_cache_is_never_used_under_grad(monkeypatch, orthogonal_map):
    projector = OrthogonalProjector(5, 9, orthogonal_map=orthogonal_map)
    with torch.no_grad():
        cached = projector.weight
    calls = count_weight_builds(monkeypatch, projector)
    weights = [projector.weight, projector.weight]
    assert len(calls) == 2  # built afresh on every access under grad: one forward per step builds it once
    assert all(w.requires_grad and w is not cached for w in weights)
    assert projector._weight_cache[1] is cached  # and a grad-mode weight is never stored


def test_frozen_projector_is_cached_under_grad(monkeypatch):
    projector = OrthogonalProjector(5, 9).requires_grad_(False)
    calls = count_weight_builds(monkeypatch, projector)
    assert projector.weight is projector.weight and len(calls) == 1


def test_cache_follows_dtype_and_load_state_dict():
    source = OrthogonalProjector(5, 9, init="random")
    target = OrthogonalProjector(5, 9)
    with torch.no_grad():
        assert torch.equal(target.weight, torch.eye(9, 5))
    target.load_state_dict(source.state_dict())
    with torch.no_grad():
        assert torch.allclose(target.weight, source.weight, atol=1e-6)
    target.double()
    with torch.no_grad():
        assert target.weight.dtype == torch.float64
        assert gram_error(target.weight) < 1e-12


@pytest.mark.parametrize("orthogonal_map", ORTHOGONAL_MAPS)
@pytest.mark.parametrize("in_dim,out_dim", [(5, 9), (9, 5)])
def test_state_dict_round_trip(orthogonal_map, in_dim, out_dim):
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map=orthogonal_map)
    train_a_few_steps(projector, steps=3)
    restored = OrthogonalProjector(in_dim, out_dim, orthogonal_map=orthogonal_map)
    restored.load_state_dict(projector.state_dict())
    with torch.no_grad():
        assert torch.equal(restored.weight, projector.weight)
    x = torch.randn(4, in_dim)
    assert torch.equal(restored(x), projector(x))


def test_qr_stores_out_times_in_parameters_not_out_squared():
    def count(module):
        return sum(p.numel() for p in module.parameters())

    assert count(OrthogonalProjector(192, 3024, orthogonal_map="qr")) == 192 * 3024
    assert count(OrthogonalProjector(3024, 192, orthogonal_map="qr")) == 192 * 3024
    assert count(OrthogonalProjector(192, 3024, orthogonal_map="matrix_exp")) == 3024 * 3024


def test_loading_another_maps_state_names_the_map():
    saved = OrthogonalProjector(8, 8, orthogonal_map="matrix_exp").state_dict()
    with pytest.raises(RuntimeError, match="saved with orthogonal_map=matrix_exp or cayley but is built with 'qr'"):
        OrthogonalProjector(8, 8, orthogonal_map="qr").load_state_dict(saved)
    nested = torch.nn.Sequential(OrthogonalProjector(8, 8, orthogonal_map="matrix_exp"))
    with pytest.raises(RuntimeError, match="projector at '0' was saved with orthogonal_map=qr"):
        nested.load_state_dict(torch.nn.Sequential(OrthogonalProjector(8, 8)).state_dict())


@pytest.mark.parametrize("orthogonal_map", ORTHOGONAL_MAPS)
def test_bf16_autocast_keeps_a_float32_orthonormal_weight(orthogonal_map):
    projector = OrthogonalProjector(16, 32, orthogonal_map=orthogonal_map, init="random")
    optimiser = torch.optim.Adam(projector.parameters(), lr=1e-2)
    inputs, target = torch.randn(8, 16, dtype=torch.bfloat16), torch.randn(8, 32)
    for _ in range(3):
        optimiser.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            weight = projector.weight
            output = projector(inputs)
        assert weight.dtype == torch.float32 and output.dtype == torch.bfloat16
        (output.float() - target).pow(2).mean().backward()
        optimiser.step()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        weight = projector.weight
    assert weight.dtype == torch.float32
    assert gram_error(weight) <= (1e-6 if orthogonal_map == "qr" else 1e-5)


def test_qr_weight_is_float32_for_half_parameters():
    projector = OrthogonalProjector(6, 10, init="random").to(torch.bfloat16)
    with torch.no_grad():
        weight = projector.weight
    assert weight.dtype == torch.float32 and gram_error(weight) <= 1e-6


def test_orthonormal_columns_gradient_matches_torch_qr():
    torch.manual_seed(0)
    matrix = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    cotangent = torch.randn(9, 4, dtype=torch.float64)
    q, r = torch.linalg.qr(matrix)
    reference = q * torch.sign(torch.diagonal(r))
    expected, = torch.autograd.grad((reference * cotangent).sum(), matrix)
    actual, = torch.autograd.grad((projectors._OrthonormalColumns.apply(matrix)[0] * cotangent).sum(), matrix)
    assert torch.allclose(actual, expected, atol=1e-12)


def test_aad_parameter_count_matches_rsd():
    assert sum(p.numel() for p in AADProjector(512, 768).parameters()) == 1_312_768


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True])
def test_bad_dims_raise(bad):
    with pytest.raises(ValueError, match="in_dim"):
        OrthogonalProjector(bad, 4)


def test_bad_map_names_allowed_values():
    with pytest.raises(ValueError, match="qr, matrix_exp, cayley, householder"):
        OrthogonalProjector(4, 4, orthogonal_map="svd")
