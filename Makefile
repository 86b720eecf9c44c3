# medlite: two commands do all set-up on a fresh machine.
#   make demo   creates .venv, installs medlite, trains MedLiT-nano on BreastMNIST, evaluates, exports, times it
#   make test   installs the test dependencies, runs the test suite, then checks the core install in a fresh venv
PYTHON ?= python3.11
VENV   ?= .venv
PY      = $(VENV)/bin/python
PIP     = $(VENV)/bin/pip
export MEDLITE_DATA ?= ../shared/data
export NO_ALBUMENTATIONS_UPDATE = 1

.PHONY: demo test test-core install install-test browser lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[export,medical,seg]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: install
	$(PY) -m medlite demo --out demo_run

browser:  # Debian's Chromium for the browser test of medlite serve (Playwright cannot download its own here)
	@command -v chromium >/dev/null || { if [ "$$(id -u)" = 0 ]; then apt-get update -q && \
	  apt-get install -y -q chromium; else echo "chromium is missing: sudo apt-get install chromium (without it \
	  the browser test is skipped, or fails under CI=true)"; fi; }

test: install-test browser
	$(PY) -m pytest -q -x --timeout 900 tests
	bash tests/install/core_install.sh

test-core:  # the core install (no extras) in a fresh venv: what it runs, and one-line hints for the rest
	bash tests/install/core_install.sh

lint: install-test
	$(VENV)/bin/ruff check medlite tests benchmarks

clean:
	rm -rf demo_run .pytest_cache
