"""The discriminator-overfitting probe logged at every evaluation (:class:`OverfitProbe`)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Subset

from gan_kd import data as gan_data


class OverfitProbe:
    """D's mean logit on fixed training reals vs held-out reals: the discriminator-overfitting signal.

    Karras et al., "Training Generative Adversarial Networks with Limited Data" (ADA, NeurIPS 2020, §3 and
    eq. 1): as D overfits, its outputs on the training reals rise while those on held-out reals of the same
    distribution fall, and ``r_t = E[sign(D_train)]`` approaches 1. Here both sets are fixed at start-up:
    the first ``n`` images of the training subset and the first ``n`` of the test split, un-flipped and not
    augmented (ADA computes ``r_t`` on D's augmented training batches). D runs in eval mode under
    ``no_grad``, so the spectral-norm vectors are not updated and no random number is drawn: probing does
    not change training. Logged per evaluation as ``probe/d_train``, ``probe/d_heldout``, ``probe/d_gap``
    (train − held-out) and ``probe/rt``.
    """

    def __init__(self, dataset: str, data_root: str, indices, n: int):
        train = gan_data.load_dataset(dataset, data_root, train=True, hflip=False)
        heldout = gan_data.load_dataset(dataset, data_root, train=False, hflip=False)
        self.sets = {"train": self._stack(Subset(train, [int(i) for i in indices[:n]])),
                     "heldout": self._stack(Subset(heldout, range(min(n, len(heldout)))))}

    @staticmethod
    def _stack(data) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = zip(*(data[i] for i in range(len(data))))
        return torch.stack(images), torch.as_tensor(labels)

    @torch.no_grad()
    def __call__(self, discriminator: nn.Module, device: torch.device, memory_format=torch.contiguous_format,
                 batch_size: int = 100) -> dict[str, float]:
        was_training = discriminator.training
        discriminator.eval()
        try:
            logits = {}
            for name, (images, labels) in self.sets.items():
                logits[name] = torch.cat([
                    discriminator(images[i:i + batch_size].to(device).contiguous(memory_format=memory_format),
                                  labels[i:i + batch_size].to(device)).float().flatten().cpu()
                    for i in range(0, images.shape[0], batch_size)])
        finally:
            discriminator.train(was_training)
        train, heldout = logits["train"].mean().item(), logits["heldout"].mean().item()
        return {"probe/d_train": train, "probe/d_heldout": heldout, "probe/d_gap": train - heldout,
                "probe/rt": logits["train"].sign().mean().item()}
