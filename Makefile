# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-installed
TEST_STAMP := $(VENV)/.test-installed
BENCH_STAMP := $(VENV)/.bench-installed
PORT ?= tcp:8000:interface=127.0.0.1

.PHONY: run run-s3 test lint docs install install-test install-bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=23.2"

# compat editable mode puts the repository on sys.path, which twistd needs to
# find twisted/plugins/antenna_plugin.py (docs/development.rst).
$(RUN_STAMP): $(BIN)/python requirements.txt setup.cfg pyproject.toml
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e . --config-settings editable_mode=compat
	touch $@

$(TEST_STAMP): $(RUN_STAMP) requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

$(BENCH_STAMP): $(RUN_STAMP) requirements-bench.txt
	$(BIN)/pip install -q -r requirements-bench.txt
	touch $@

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

# py-spy for `bench/run_bench.sh profile` (docs/performance.rst).
install-bench: $(BENCH_STAMP)

run: $(RUN_STAMP)
	$(BIN)/twistd -n --pidfile= antenna --port $(PORT) $(ARGS)

# The collector against a local S3 (moto_server on a free loopback port, the
# bucket created), in the foreground; moto stops with it (scripts/run_s3.py).
run-s3: $(TEST_STAMP)
	$(BIN)/python scripts/run_s3.py --port $(PORT) $(ARGS)

test: $(TEST_STAMP)
	AWS_EC2_METADATA_DISABLED=true $(BIN)/python -m pytest $(PYTEST_ARGS)

# ruff (style, imports, annotations) and mypy (types) over the package;
# hadolint over the Dockerfile.
lint: $(TEST_STAMP)
	$(BIN)/ruff check antenna_tw twisted
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile

# HTML into docs/_build/html; any Sphinx warning (an option without a doc,
# a broken reference) fails the build.
docs: $(TEST_STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build antenna_crashes antenna_spool build *.egg-info twisted/plugins/dropin.cache
