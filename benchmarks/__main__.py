"""``python -m benchmarks``: the same command as ``scripts/bench.py``."""
import sys

from benchmarks.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m benchmarks"))  # not argparse's '__main__.py'
