"""GAN objectives of the DiffAugment-BigGAN-CIFAR protocol: hinge losses and the LeCam regulariser."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`` (BigGAN ``losses.py``)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def generator_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    """``-mean(D(G(z)))``."""
    return -fake_logits.mean()


class LeCamRegularizer:
    """LeCam regulariser (Tseng et al., CVPR 2021), as KD-DLGAN's BigGAN code uses it with weight 0.3.

    Exponential moving averages (decay 0.9) of the batch means of D(real) and D(fake) act as anchors:
    ``reg = mean(relu(D(real) - ema_fake)²) + mean(relu(ema_real - D(fake))²)``. Before ``start``
    iterations the averages simply track the current means, and the term is applied only after ``start``.
    """

    def __init__(self, weight: float, decay: float = 0.9, start: int = 1000):
        self.weight, self.decay, self.start = float(weight), float(decay), int(start)
        self.ema_real = 0.0
        self.ema_fake = 0.0

    def update(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, iteration: int) -> None:
        decay = self.decay if iteration >= self.start else 0.0
        self.ema_real = decay * self.ema_real + (1 - decay) * real_logits.detach().mean().item()
        self.ema_fake = decay * self.ema_fake + (1 - decay) * fake_logits.detach().mean().item()

    def __call__(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, iteration: int) -> torch.Tensor:
        if self.weight == 0 or iteration <= self.start:
            return real_logits.new_zeros(())
        reg = F.relu(real_logits - self.ema_fake).pow(2).mean() + F.relu(self.ema_real - fake_logits).pow(2).mean()
        return self.weight * reg

    def state_dict(self) -> dict:
        return {"ema_real": self.ema_real, "ema_fake": self.ema_fake}

    def load_state_dict(self, state: dict) -> None:
        self.ema_real, self.ema_fake = float(state["ema_real"]), float(state["ema_fake"])
