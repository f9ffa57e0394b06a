# The one way in. `make demo` and `make test` build .venv from scratch when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := constraints.txt
STAMP := $(VENV)/.metis-installed
PACKAGES := metis_core metis_tokenizers metis_embodiments metis_datasets metis_sim
PYPROJECTS := pyproject.toml $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
PYTEST_ARGS ?=

.PHONY: help venv sim-gl demo quickstart test test-fast test-slow lint format docs bench wheels check-light clean

help:
	@echo "make demo        set up .venv if needed and run the paper's reproduction at toy scale (examples/run_all.py, ~25 min on 2 cores)"
	@echo "make quickstart  set up .venv if needed and run examples/quickstart.py (a minute)"
	@echo "make test        set up .venv if needed and run the test suite (slow tests too)"
	@echo "make test-fast   the test suite without tests marked slow"
	@echo "make lint        ruff check + format check"
	@echo "make docs        build the Sphinx docs (warnings are errors)"
	@echo "make bench       run the benchmarks in benchmarks/"
	@echo "make check-light build wheels; install metis-core + metis-tokenizers alone in a clean venv"

venv: $(STAMP)

# torch first, from the pinned CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
$(STAMP): $(CONSTRAINTS) $(PYPROJECTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade --quiet pip
	$(PIP) install --quiet -c $(CONSTRAINTS) "torch==2.13.0"
	$(PIP) install --quiet -c $(CONSTRAINTS) \
		-e "metis_core[vla,train,serve,test,docs,dev]" \
		-e "metis_tokenizers[test]" \
		-e "metis_embodiments[test]" \
		-e "metis_datasets[test]" \
		-e "metis_sim[test]"
	touch $(STAMP)

# metis-sim renders headless through EGL (Mesa llvmpipe on a CPU); install it when missing.
sim-gl:
	@if ! ldconfig -p | grep -q 'libEGL.so.1' || ! ldconfig -p | grep -q 'libEGL_mesa.so.0'; then \
		echo "installing libegl1 libgl1 libegl-mesa0 for headless MuJoCo rendering"; \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq libegl1 libgl1 libegl-mesa0 >/dev/null; \
	fi

demo: $(STAMP) sim-gl
	OMP_NUM_THREADS=1 $(PY) examples/run_all.py

quickstart: $(STAMP)
	$(PY) examples/quickstart.py

test: $(STAMP) sim-gl
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

test-fast: $(STAMP) sim-gl
	$(PY) -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

docs: $(STAMP)
	$(PY) docs/scripts/draw_frames.py docs/_static/frames.png
	$(PY) -m sphinx -W --keep-going -n -b html docs docs/_build/html

bench: $(STAMP)
	@set -e; for script in benchmarks/*.py; do \
		case "$$script" in */_*) continue;; esac; \
		echo "== $$script"; $(PY) "$$script"; done

wheels: $(STAMP)
	rm -rf dist
	$(PIP) wheel --quiet --no-deps --no-build-isolation -w dist $(addprefix ./,$(PACKAGES)) .

check-light: wheels
	bash .ci/check_light.sh

clean:
	rm -rf $(VENV) dist docs/_build .pytest_cache .ruff_cache
