"""GAN side: BigGAN with DiffAugment on data-limited CIFAR / Fashion-MNIST, distilled from a frozen teacher."""
