"""kd_core.runtime.logs: the text log, on stderr and in log.txt."""
from __future__ import annotations

import logging

import pytest

from kd_core.runtime.logs import get_logger


def test_logger_writes_stderr_and_log_file_once(tmp_path, capsys):
    logger = get_logger("kd_test.main", tmp_path)
    logger = get_logger("kd_test.main", tmp_path)  # reconfiguring must not duplicate lines
    logger.info("step %d done", 7)
    logger.debug("hidden")
    for handler in logger.handlers:
        handler.flush()
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith("INFO kd_test.main: step 7 done")
    assert capsys.readouterr().err.count("step 7 done") == 1


def test_non_main_logger_writes_no_file_and_only_warnings(tmp_path, capsys):
    run_dir = tmp_path / "run"
    logger = get_logger("kd_test.worker", run_dir, is_main=False)
    logger.info("chatty")
    logger.warning("careful")
    assert not run_dir.exists()
    err = capsys.readouterr().err
    assert "chatty" not in err and "careful" in err


@pytest.fixture(autouse=True)
def _close_test_loggers():
    yield
    for name in ("kd_test.main", "kd_test.worker"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
