# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Nothing downloads at run time: the hub is offline and its cache is project-local.
export HF_HUB_OFFLINE := 1
export HF_HOME := $(CURDIR)/.hf_home
export MVSK_CACHE := $(CURDIR)/.mvsk_cache
export MPLBACKEND := Agg
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test export clean-check nbs bench-suite gpu-check

install: $(VENV)/.installed

# A GPU user creates .venv first and installs their CUDA torch into it; we never replace it.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	@touch $@

demo: install
	$(VENV)/bin/mvsk demo --out outputs/demo

# Fails when the notebooks and the exported package disagree, then runs every test, two at a time (each one
# keeps about one core busy; the cached tiny models are written under a file lock). One torch thread per worker
# (and per process it starts), so that the two workers do not share two cores four ways.
test: install clean-check
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 tests

clean-check:
	@before=$$(find nbs mvsk -type f -not -path '*__pycache__*' | sort | xargs md5sum); \
	$(VENV)/bin/nbdev-clean >/dev/null && $(VENV)/bin/nbdev-export >/dev/null || exit 1; \
	after=$$(find nbs mvsk -type f -not -path '*__pycache__*' | sort | xargs md5sum); \
	if [ "$$before" != "$$after" ]; then \
	  echo "nbdev-clean/nbdev-export changed files: the notebooks and mvsk/ were out of sync. Changed:"; \
	  diff <(echo "$$before") <(echo "$$after") | grep '^[<>]' | awk '{print $$3}' | sort -u; exit 1; fi

export:
	$(VENV)/bin/nbdev-clean && $(VENV)/bin/nbdev-export

# Re-run every notebook and save its outputs (figures) in place, then clean it.
nbs: install
	$(PY) tests/run_notebooks.py --save && $(VENV)/bin/nbdev-clean

# On a machine with a CUDA GPU (install its CUDA torch into .venv first): the device tests on CUDA, then the SD2-size
# figures of bench/, in one report (about 8 minutes on one GPU).
gpu-check: install
	bash bench/gpu.sh outputs/gpu-check.md
