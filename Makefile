# The commands README.md names. `make test` needs only Python: it builds .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch/torchvision pinned to the wheels this project is tested with (on the dev machines they lie on disk).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: test test-fast install clean bench

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev,imagenet]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

# Skips the end-to-end runs marked `slow`.
test-fast: install
	$(PY) -m pytest -m "not slow"

# Benchmarks of this machine (one thread, about 10 minutes) -> results/benchmarks.md.
bench: install
	$(PY) scripts/bench.py --out results/benchmarks.md

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
