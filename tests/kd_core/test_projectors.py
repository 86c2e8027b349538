import pytest
import torch

from kd_core.projectors import ORTHOGONAL_MAPS, AADProjector, OrthogonalProjector

SHAPES = [(5, 9), (7, 7), (9, 5)]  # in < out, in = out, in > out


def gram_error(weight: torch.Tensor) -> float:
    """||W^T W - I||_inf for tall W, ||W W^T - I||_inf for wide W: the Stiefel constraint."""
    gram = weight.T @ weight if weight.shape[0] >= weight.shape[1] else weight @ weight.T
    return (gram - torch.eye(gram.shape[0], dtype=gram.dtype)).abs().max().item()


def train_a_few_steps(projector: OrthogonalProjector, steps: int = 8) -> None:
    torch.manual_seed(1)
    target = torch.randn(32, projector.out_dim)
    inputs = torch.randn(32, projector.in_dim)
    optimiser = torch.optim.Adam(projector.parameters(), lr=0.1)
    for _ in range(steps):
        optimiser.zero_grad()
        (projector(inputs) - target).pow(2).mean().backward()
        optimiser.step()


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


@pytest.mark.parametrize("orthogonal_map", ORTHOGONAL_MAPS)
@pytest.mark.parametrize("in_dim,out_dim", SHAPES)
def test_starts_as_truncated_identity(orthogonal_map, in_dim, out_dim):
    projector = OrthogonalProjector(in_dim, out_dim, orthogonal_map=orthogonal_map)
    assert torch.allclose(projector.weight.detach(), torch.eye(out_dim, in_dim), atol=1e-6)


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


def test_wide_projection_is_not_an_isometry():
    projector = OrthogonalProjector(9, 5, init="random")
    x = torch.randn(16, 9)
    with torch.no_grad():
        projected = projector(x)
    assert not torch.allclose(projected @ projected.T, x @ x.T, atol=1e-2)


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
def test_gradcheck_reaches_generator(orthogonal_map):
    torch.manual_seed(0)
    projector = OrthogonalProjector(3, 4, orthogonal_map=orthogonal_map, init="random").double()
    x = torch.randn(5, 3, dtype=torch.float64)

    def forward(generator):
        return torch.func.functional_call(projector, {"generator": generator}, (x,))

    generator = projector.generator.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(forward, (generator,), eps=1e-6, atol=1e-5)
    projector(x).sum().backward()
    assert projector.generator.grad is not None and projector.generator.grad.abs().sum() > 0


def test_householder_gradients_reach_parameters():
    projector = OrthogonalProjector(3, 4, orthogonal_map="householder", init="random").double()
    projector(torch.randn(5, 3, dtype=torch.float64)).sum().backward()
    grads = [p.grad for p in projector.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_matrix_built_once_per_forward(monkeypatch):
    projector = OrthogonalProjector(4, 6)
    calls = []
    original = torch.linalg.matrix_exp
    monkeypatch.setattr(torch.linalg, "matrix_exp", lambda m: calls.append(1) or original(m))
    projector(torch.randn(128, 4))
    assert len(calls) == 1


def test_aad_parameter_count_matches_rsd():
    assert sum(p.numel() for p in AADProjector(512, 768).parameters()) == 1_312_768


@pytest.mark.parametrize("bad", [0, -3, 2.5, "8", True])
def test_bad_dims_raise(bad):
    with pytest.raises(ValueError, match="in_dim"):
        OrthogonalProjector(bad, 4)


def test_bad_map_names_allowed_values():
    with pytest.raises(ValueError, match="matrix_exp, cayley, householder"):
        OrthogonalProjector(4, 4, orthogonal_map="qr")
