"""GAN models: the 32x32 BigGAN of the DiffAugment BigGAN-CIFAR config."""
from gan_kd.models.biggan import Discriminator, Generator, count_parameters

__all__ = ["Discriminator", "Generator", "count_parameters"]
