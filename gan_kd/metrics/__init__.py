"""Sample-quality metrics of a generator, each in a named feature space (see :mod:`gan_kd.metrics.evaluator`)."""
