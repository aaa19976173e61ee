# Two commands for a fresh machine (see README):
#   make serve        start the Label Studio ML backend on :9090
#   make test         run the whole test suite (what CI runs; installs Label Studio and Chromium)
#   make test-quick   day-to-day: no Label Studio, no browser, no slow tests
PYTHON ?= python3
VENV ?= .venv
# The tested versions (torch, transformers) live in one file, used here and by backend/Dockerfile.
CONSTRAINTS := constraints.txt
TORCH_VERSION := $(shell sed -n 's/^torch==//p' $(CONSTRAINTS))
# Extra pip arguments for torch, e.g. the CUDA 12.6 build the Docker image runs:
#   make install TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu126"
TORCH_INDEX ?=
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# CPU speed lever (runtime/allocator.py): run the server on tcmalloc when it is installed
# (apt-get install libtcmalloc-minimal4); `make serve TCMALLOC=` runs it on glibc malloc.
TCMALLOC ?= $(firstword $(wildcard /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4))

.PHONY: serve test test-quick install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first and pinned: a bare "torch" requirement would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install -q -c $(CONSTRAINTS) "torch==$(TORCH_VERSION)" $(TORCH_INDEX)
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: install
	LD_PRELOAD="$(TCMALLOC)" $(BIN)/python -m backend

test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The suite minus the tests that need Label Studio or a browser (e2e) and the slow ones (slow):
# nothing beyond `install-test` is installed.
test-quick: install-test
	$(BIN)/python -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)

# --- Real Label Studio and a browser for the end-to-end tests (tests/e2e) ---------------------------
# Label Studio gets its own venv: its pins (Django, label-studio-sdk, ...) are not ours. ~1 GB.
LABEL_STUDIO_VERSION ?= 1.23.2
LS_VENV ?= .venv-labelstudio
CHROMIUM ?= /usr/bin/chromium

.PHONY: install-labelstudio install-chromium install-e2e

$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q --upgrade pip
	$(LS_VENV)/bin/pip install -q "label-studio==$(LABEL_STUDIO_VERSION)"
	touch $@

install-labelstudio: $(LS_VENV)/.installed

# Debian's chromium (Playwright's own browser download does not work here). Needs root (CI) or sudo.
# tcmalloc comes along: tests/runtime/test_allocator.py runs the model on it.
install-chromium:
	@if [ ! -x $(CHROMIUM) ] || [ -z "$(TCMALLOC)" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium libtcmalloc-minimal4 >/dev/null \
	  || echo "WARNING: could not install chromium and tcmalloc; the browser test (tests/e2e) will fail"; \
	fi

install-e2e: install-labelstudio install-chromium

test: install-e2e
