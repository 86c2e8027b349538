"""Classifier distillation on CIFAR-100 and ImageNet: the model zoo, data, distiller and trainer.

Builds on :mod:`kd_core` for the losses. ``gan_kd`` may use only the checkpoint API in
:mod:`classifier_kd.models` (loading a classifier as a frozen teacher or feature extractor).
"""
