"""One discriminator step and one generator step: what each optimiser step of a GAN iteration computes.

As stylegan2-ada-pytorch keeps ``loss.py`` apart from its training loop, :class:`AdversarialSteps` holds the two
steps and :class:`gan_kd.train.Trainer` (which inherits them) holds the loop that calls them: ``d_steps`` D steps,
then one G step, per iteration. The steps use the trainer's models, optimisers, grad scaler, LeCam, teacher and
precision; the loss terms themselves are :mod:`gan_kd.objectives`'. A step whose terms are not finite raises
:class:`NonFiniteStep` on every rank before its optimiser step, and the loop skips it or stops
(``--skip-nonfinite``).
"""
from __future__ import annotations

import torch

from gan_kd.diffaug import diff_augment
from gan_kd.objectives import discriminator_terms, generator_terms
from kd_core.runtime.distributed import unwrap
from kd_core.runtime.finite import all_finite, all_ranks_true, format_terms


class NonFiniteStep(Exception):
    """One D or G step whose loss terms (or teacher features) are not finite; its optimiser step is not taken."""


class AdversarialSteps:
    """The D and G steps of :class:`gan_kd.train.Trainer` (its base class: they read its attributes)."""

    def _noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.randn(n, self.config.dim_z, device=self.device)
        labels = torch.randint(0, self.num_classes, (n,), device=self.device)
        return z, labels

    def _autocast(self):
        return self.precision.autocast()

    def _require_finite(self, step: str, iteration: int, terms: dict, cause) -> None:
        """Raise :class:`NonFiniteStep` on every rank when any rank's ``terms`` are not finite.

        ``cause`` is the explanation, or a function giving it, called only when a term is not finite.
        """
        if not all_ranks_true(all_finite(terms), self.device):
            reason = cause() if callable(cause) else cause
            raise NonFiniteStep(f"iteration {iteration}, {step}: non-finite {format_terms(terms)} ({reason})")

    def discriminator_step(self, real: torch.Tensor, real_labels: torch.Tensor, iteration: int) -> dict:
        """One D step; returns its terms, detached, as logged: ``d/<term>`` of
        :func:`gan_kd.objectives.discriminator_terms` (``d/total`` was back-propagated), ``d/logit_real`` and
        ``d/logit_fake``. Raises :class:`NonFiniteStep` (the optimiser step not taken) when one is not finite."""
        config = self.config
        z, fake_labels = self._noise(real.shape[0])
        with torch.no_grad(), self._autocast():
            fake = self.generator(z, fake_labels).float()
        images = diff_augment(torch.cat([fake, real]), config.diffaug)
        labels = torch.cat([fake_labels, real_labels])
        teacher_features = None
        if self.teacher is not None:
            teacher_features = self.teacher(images)
            # Checked before the normaliser: whitening NaN features fails inside the eigendecomposition.
            self._require_finite("D step", iteration, {"teacher_features": teacher_features.abs().sum()},
                                 lambda: "G's images are not finite: G diverged; lower --lr-g"
                                 if not bool(torch.isfinite(fake).all()) else
                                 "the teacher gives non-finite features for finite images; check the teacher")
        with self._autocast():
            logits, distill = self.critic(images, labels, teacher_features)
        logits = logits.float()
        fake_logits, real_logits = logits[: fake.shape[0]], logits[fake.shape[0]:]
        losses = discriminator_terms(real_logits, fake_logits, distill, lecam=self.lecam, kd_weight=config.kd_weight,
                                     iteration=iteration)
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        terms = {f"d/{name}": value.detach() for name, value in losses.items()}
        terms["d/logit_real"] = real_logits.detach().mean()
        terms["d/logit_fake"] = fake_logits.detach().mean()
        # After backward, so that every DDP rank has reduced its gradients; the step is not taken.
        self._require_finite("D step", iteration, terms, "D diverged; lower --lr-d or --kd-weight")
        self.scaler.step(self.opt_d)
        self.scaler.update()
        self.lecam.update(real_logits, fake_logits, iteration)
        return terms

    def generator_step(self, iteration: int) -> dict:
        """One G step; returns ``g/<term>`` of :func:`gan_kd.objectives.generator_terms`, detached."""
        z, labels = self._noise(self.local_batch)
        with self._autocast():
            fake = self.generator(z, labels)
            logits = unwrap(self.critic).discriminator(diff_augment(fake.float(), self.config.diffaug), labels)
        losses = generator_terms(logits.float())
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        terms = {f"g/{name}": value.detach() for name, value in losses.items()}
        self._require_finite("G step", iteration, terms, "G or D diverged; lower --lr-g / --lr-d")
        self.scaler.step(self.opt_g)
        self.scaler.update()
        return terms
