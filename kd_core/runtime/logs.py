"""The text log of a run: :func:`get_logger`, lines to stderr and, on the main rank, to ``<run>/log.txt``."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LOG_FILE = "log.txt"
_HANDLER_MARK = "_kd_core_handler"


def get_logger(name: str, run_dir: str | os.PathLike | None = None, is_main: bool = True) -> logging.Logger:
    """A ``logging`` logger writing to stderr and, on the main rank, to ``run_dir/log.txt``.

    Non-main ranks log only warnings and errors, so a 8-GPU run prints each info line once.
    Calling it again for the same name replaces the handlers it added (no duplicated lines),
    e.g. when a CLI reconfigures after the run directory is known.
    """
    logger = logging.getLogger(name)
    for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    logger.propagate = False  # the root logger may have its own stderr handler
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if run_dir is not None and is_main:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(Path(run_dir) / LOG_FILE, mode="a", encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _HANDLER_MARK, True)
        logger.addHandler(handler)
    return logger
