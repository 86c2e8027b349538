#!/usr/bin/env python
"""Benchmarks of the training and evaluation paths on this machine -> ``results/benchmarks.md`` (``make bench``).

The suite is the ``benchmarks`` package beside ``scripts/`` (its docstring lists the sections and the modules;
``python -m benchmarks`` runs the same): this file puts the repository on the path and calls its command.
Importing the package sets ``OPENBLAS_NUM_THREADS=1`` before numpy and torch load.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
