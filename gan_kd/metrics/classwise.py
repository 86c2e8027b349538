"""Class-aware scores: does each class's set of samples look like that class, and can a classifier learn from it?

* **Intra-class FD** (as StudioGAN's intra-class FID, Kang et al. 2023; Miyato & Koyama 2018): the mean over
  classes of the Fréchet distance between the samples generated for class ``c`` and the real test images of
  class ``c``. Within-class collapse (ten near-copies per class) inflates it even where the pooled FD is small.
  Computed in the label-free space (``icfd_vgg``) and, with ``--fd-features``, the classifier's (``icfd``).
* **GAN-test accuracy** (Shmelkov et al., ECCV 2018, "How good is my GAN?"): the share of samples that a
  classifier trained on real data assigns to the class they were generated for (``cls_acc``), with the
  classifier's Inception-Score-like ``cls_is``. High for prototypical samples, collapsed or not.
* **GAN-train accuracy** (Shmelkov et al. 2018; StudioGAN's classifier accuracy score, CAS): a small CNN
  (:class:`SmallCNN`) trained **only on generated samples** and their labels, then scored on the real test
  set (``gan_train_acc``). Beside it, the same CNN with the same recipe and seed trained on as many real
  training images (``gan_train_real_acc``, the ceiling). A collapsed generator teaches a poor classifier
  whatever its samples look like; samples with the wrong labels teach a wrong one.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan_kd.metrics.fidelity import frechet_distance

GAN_TRAIN_EPOCHS = 6
GAN_TRAIN_BATCH = 128
GAN_TRAIN_LR = 0.05


def class_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``cls_acc`` (share of rows whose argmax is their label) and ``cls_is`` (``exp(mean_x KL(p(y|x) || p(y)))``,
    ``p(y)`` the mean softmax over the rows) from a classifier's logits, in float64."""
    if logits.dim() != 2 or logits.shape[0] != labels.shape[0] or logits.shape[0] < 1:
        raise ValueError(f"class scores need (N, C) logits and N labels, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    log_p = torch.log_softmax(logits.double(), dim=1)
    log_marginal = torch.logsumexp(log_p, dim=0) - np.log(log_p.shape[0])
    kl = (log_p.exp() * (log_p - log_marginal)).sum(dim=1)
    return {"cls_acc": float((logits.argmax(dim=1) == labels.to(logits.device)).double().mean()),
            "cls_is": float(kl.mean().exp())}


def intra_class_fd(fake: torch.Tensor, fake_labels: torch.Tensor, real: torch.Tensor, real_labels: torch.Tensor,
                   num_classes: int) -> float:
    """The mean over classes of FD(samples of class c, real images of class c).

    Samples carry uniform random labels, so with few samples a class may be drawn fewer than twice: such a class
    (no covariance) is left out of the mean; a ``ValueError`` when no class has 2 samples and 2 real images.
    """
    distances = []
    for c in range(num_classes):
        fake_c, real_c = fake[fake_labels == c], real[real_labels == c]
        if len(fake_c) >= 2 and len(real_c) >= 2:
            distances.append(frechet_distance(fake_c, real_c))
    if not distances:
        raise ValueError("intra-class FD needs at least 2 samples and 2 real images of some class: evaluate more samples")
    return float(np.mean(distances))


class SmallCNN(nn.Module):
    """Three 3x3 conv + BN + ReLU + 2x2 max-pool blocks (32, 64, 128 channels) and a linear head: ~8 MMAC an image
    at 32x32, so six epochs on 10,000 images take about a minute on one core."""

    def __init__(self, num_classes: int, width: int = 32):
        super().__init__()
        layers, channels = [], 3
        for out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def recipe() -> tuple:
    """What GAN-train's classifier training depends on besides its data and seed (part of a cache key)."""
    return ("SmallCNN", SmallCNN.__init__.__defaults__, GAN_TRAIN_EPOCHS, GAN_TRAIN_BATCH, GAN_TRAIN_LR)


def _inputs(images_uint8: torch.Tensor) -> torch.Tensor:
    return images_uint8.float() / 127.5 - 1


def train_small_classifier(images_uint8: torch.Tensor, labels: torch.Tensor, num_classes: int, *, seed: int = 0,
                           epochs: int = GAN_TRAIN_EPOCHS, device: torch.device | str = "cpu") -> SmallCNN:
    """:class:`SmallCNN` trained on ``images_uint8`` (SGD, momentum 0.9, cosine learning rate, batch 128, random
    horizontal flips), with its weights and batch order drawn from ``seed`` (the global RNG is not touched)."""
    if len(images_uint8) < GAN_TRAIN_BATCH // 4:
        raise ValueError(f"GAN-train accuracy needs at least {GAN_TRAIN_BATCH // 4} samples, got {len(images_uint8)}")
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN(num_classes).to(device)
    steps = epochs * -(-len(images_uint8) // GAN_TRAIN_BATCH)
    optimiser = torch.optim.SGD(model.parameters(), lr=GAN_TRAIN_LR, momentum=0.9, weight_decay=5e-4, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=GAN_TRAIN_LR, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images_uint8), generator=rng)
        for start in range(0, len(order), GAN_TRAIN_BATCH):
            index = order[start:start + GAN_TRAIN_BATCH]
            x = _inputs(images_uint8[index])
            flip = torch.rand(len(index), generator=rng) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x).to(device)
            loss = F.cross_entropy(model(x), labels[index].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor, device: torch.device | str = "cpu") -> float:
    correct = 0
    for start in range(0, len(images_uint8), 500):
        logits = model(_inputs(images_uint8[start:start + 500]).to(device))
        correct += int((logits.argmax(dim=1).cpu() == labels[start:start + 500]).sum())
    return correct / len(images_uint8)


def gan_train_accuracy(images_uint8: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                       test_labels: torch.Tensor, num_classes: int, *, seed: int = 0,
                       device: torch.device | str = "cpu") -> float:
    """Accuracy on ``test_images`` of a :class:`SmallCNN` trained only on ``images_uint8`` and ``labels``."""
    model = train_small_classifier(images_uint8, labels, num_classes, seed=seed, device=device)
    return accuracy(model, test_images, test_labels, device)
