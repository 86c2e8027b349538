"""gan_kd.metrics.classwise: intra-class FD, GAN-test scores from logits, and the GAN-train SmallCNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan_kd.metrics import classwise
from gan_kd.metrics.fidelity import frechet_distance

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def gaussian(n: int, seed: int, dim: int = 3, shift: float = 0.0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, dim)) + shift)


# ---------------------------------------------------------------------------------------------- intra-class FD


def test_intra_class_fd_is_zero_for_identical_per_class_sets():
    real = gaussian(60, 0)
    labels = torch.arange(60) % 3
    order = torch.randperm(60, generator=torch.Generator().manual_seed(0))  # same sets, another order
    assert classwise.intra_class_fd(real[order], labels[order], real, labels, 3) == pytest.approx(0.0, abs=1e-8)


def test_intra_class_fd_is_the_mean_of_per_class_fds():
    real, fake = gaussian(60, 1), gaussian(45, 2, shift=0.5)
    real_labels, fake_labels = torch.arange(60) % 3, torch.arange(45) % 3
    per_class = [frechet_distance(fake[fake_labels == c], real[real_labels == c]) for c in range(3)]
    assert classwise.intra_class_fd(fake, fake_labels, real, real_labels, 3) == pytest.approx(np.mean(per_class))


def test_intra_class_fd_sees_swapped_labels_that_pooled_fd_does_not():
    """Two well-separated classes: swapping the labels leaves the pooled FD at 0 and makes the intra-class FD large."""
    real = torch.cat([gaussian(40, 3), gaussian(40, 4, shift=10.0)])
    labels = torch.cat([torch.zeros(40, dtype=torch.long), torch.ones(40, dtype=torch.long)])
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)
    assert classwise.intra_class_fd(real, labels, real, labels, 2) == pytest.approx(0.0, abs=1e-8)
    assert classwise.intra_class_fd(real, 1 - labels, real, labels, 2) > 200  # |mu1 - mu2|² = 3 * 10²


@pytest.mark.parametrize("fake_count, real_count", [(1, 10), (10, 1), (0, 10)])
def test_intra_class_fd_leaves_out_a_class_drawn_fewer_than_twice(fake_count, real_count):
    """Uniform random labels can draw a class once: that class has no covariance and is left out of the mean."""
    fake = torch.cat([gaussian(10, 5), gaussian(fake_count, 6)])
    fake_labels = torch.cat([torch.zeros(10, dtype=torch.long), torch.ones(fake_count, dtype=torch.long)])
    real = torch.cat([gaussian(10, 7), gaussian(real_count, 8)])
    real_labels = torch.cat([torch.zeros(10, dtype=torch.long), torch.ones(real_count, dtype=torch.long)])
    only_class_0 = classwise.intra_class_fd(fake[:10], fake_labels[:10], real[:10], real_labels[:10], 1)
    assert classwise.intra_class_fd(fake, fake_labels, real, real_labels, 2) == pytest.approx(only_class_0)


def test_intra_class_fd_without_any_usable_class_raises_one_line():
    x, labels = gaussian(3, 9), torch.arange(3)  # every class drawn once
    with pytest.raises(ValueError, match="at least 2 samples and 2 real images of some class") as info:
        classwise.intra_class_fd(x, labels, x, labels, 3)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- class scores


def reference_is(logits: np.ndarray) -> float:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    marginal = p.mean(axis=0)
    kl = [sum(p[i, c] * (np.log(p[i, c]) - np.log(marginal[c])) for c in range(p.shape[1])) for i in range(len(p))]
    return float(np.exp(np.mean(kl)))


def test_class_scores_against_a_direct_computation():
    rng = np.random.default_rng(10)
    logits = rng.normal(size=(50, 4)) * 2
    labels = rng.integers(0, 4, 50)
    out = classwise.class_scores(torch.from_numpy(logits).float(), torch.from_numpy(labels))
    assert out["cls_acc"] == pytest.approx(float(np.mean(logits.argmax(1) == labels)))
    assert out["cls_is"] == pytest.approx(reference_is(logits.astype(np.float32).astype(np.float64)), rel=1e-6)


def test_class_scores_extremes():
    labels = torch.arange(40) % 4
    confident = torch.nn.functional.one_hot(labels, 4).float() * 60  # certain, balanced over 4 classes
    out = classwise.class_scores(confident, labels)
    assert out["cls_acc"] == 1.0 and out["cls_is"] == pytest.approx(4.0, rel=1e-6)
    assert classwise.class_scores(confident, (labels + 1) % 4)["cls_acc"] == 0.0
    uniform = classwise.class_scores(torch.zeros(40, 4), labels)
    assert uniform["cls_is"] == pytest.approx(1.0)
    collapsed = classwise.class_scores(torch.nn.functional.one_hot(torch.zeros(40, dtype=torch.long), 4).float() * 60,
                                       labels)
    assert collapsed["cls_acc"] == 0.25 and collapsed["cls_is"] == pytest.approx(1.0)


def test_class_scores_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="class scores need"):
        classwise.class_scores(torch.zeros(5, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="class scores need"):
        classwise.class_scores(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- GAN-train CNN


def tiny_set(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g), torch.arange(n) % 4


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_small_cnn_shapes():
    model = classwise.SmallCNN(7)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 7)


def test_train_small_classifier_is_deterministic_and_leaves_the_global_rng_alone():
    images, labels = tiny_set()
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    first = weights(classwise.train_small_classifier(images, labels, 4, seed=3, epochs=2))
    assert torch.equal(state, torch.random.get_rng_state())
    torch.manual_seed(999)  # another global state: must not matter
    second = weights(classwise.train_small_classifier(images, labels, 4, seed=3, epochs=2))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = weights(classwise.train_small_classifier(images, labels, 4, seed=4, epochs=2))
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_train_small_classifier_learns_and_returns_eval_mode():
    """Four classes told apart by brightness: the CNN must learn them (a check that it trains at all)."""
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(128) % 4
    images = (labels.view(-1, 1, 1, 1) * 60 + torch.randint(0, 20, (128, 3, 16, 16), generator=g)).to(torch.uint8)
    model = classwise.train_small_classifier(images, labels, 4, seed=0, epochs=4)
    assert not model.training
    assert classwise.accuracy(model, images, labels) > 0.9


def test_train_small_classifier_needs_a_batch_worth_of_samples():
    images, labels = tiny_set(n=classwise.GAN_TRAIN_BATCH // 4 - 1)
    with pytest.raises(ValueError, match=f"at least {classwise.GAN_TRAIN_BATCH // 4} samples"):
        classwise.train_small_classifier(images, labels, 4)


def test_gan_train_accuracy_is_the_accuracy_of_the_trained_model():
    images, labels = tiny_set(n=40, seed=2)
    test_images, test_labels = tiny_set(n=30, seed=3)
    model = classwise.train_small_classifier(images, labels, 4, seed=5, epochs=classwise.GAN_TRAIN_EPOCHS)
    assert classwise.gan_train_accuracy(images, labels, test_images, test_labels, 4, seed=5) == \
        classwise.accuracy(model, test_images, test_labels)
