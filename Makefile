# Two entry points: `make demo` (mer analyze on the bundled sample) and `make test`.
# Both build the virtual environment on first use from this project's files only.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: venv demo test test-all lint

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# Their metadata pins torch<2.3 and tensorflow (resemblyzer: webrtcvad and the
	# obsolete `typing` backport); mer uses their weights on current torch, so they
	# are installed without their dependency lists.
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0 fer==25.10.3 resemblyzer==0.1.4
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mer analyze samples/demo.mp4

test: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

test-all: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev]'
	$(VENV)/bin/ruff check mercli tests benchmarks samples
	$(VENV)/bin/ruff format --check mercli tests benchmarks samples
	$(VENV)/bin/mypy
