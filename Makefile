# The commands README.md names. `make test` needs only Python: it builds .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch/torchvision pinned to the wheels this project is tested with (on the dev machines they lie on disk).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: test test-fast install clean bench demo

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[dev,imagenet,plots]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest

# Skips the end-to-end runs marked `slow`.
test-fast: install
	$(PY) -m pytest -m "not slow"

# Benchmarks of this machine (one thread; sections 1-6 about 10 minutes, plus about 7 for section 1's modes tables
# (about 15 with native bf16, which doubles the modes), 7 (the evaluation metrics at 10,000 samples) about 13 more)
# -> results/benchmarks.md. The modes tables time eager and --compile side by side; each compiled mode compiles for
# minutes on a cold inductor cache (the first run on a machine: it can add an hour), for seconds on a warm one
# (/tmp/torchinductor_$USER); section 1 states the seconds. Estimates: scaled from a 2-core AVX2 machine's run.
bench: install
	$(PY) scripts/bench.py --out results/benchmarks.md

# The GAN study's two flagship rows offline, end to end (<= 10 minutes on 2 cores, install included): DA and VkD +
# whitening side by side at 60 Fashion-MNIST images with the committed classifiers (results/teachers/), a fast
# evaluation, runs/demo/demo.png and a table beside the study's. SMOKE=1: tiny sizes; ITERATIONS=N: longer runs.
demo: install
	$(PY) scripts/demo.py $(if $(SMOKE),--smoke,) $(if $(ITERATIONS),--iterations $(ITERATIONS),)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
