# The two commands: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SCINTERP_CONFIG ?= $(CURDIR)/scinterp.yaml
# DAGSTER_HOME comes from the configuration's `home` unless it is set in the environment.
WITH_HOME = DAGSTER_HOME=$${DAGSTER_HOME:-$$($(BIN)/scinterp dagster-home)}
PYTEST_ARGS ?=

.PHONY: install browser demo test test-fast ui bench bench-study calibrate upgrade lock clean

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch pinned first: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0 -c constraints.txt
	# constraints.txt pins every dependency to the set CI tested; `make lock` refreshes it from .venv
	$(BIN)/pip install --quiet -e '.[test]' -c constraints.txt
	touch $(STAMP)

# Upgrade the locked set: `make upgrade` installs today's releases into .venv (torch stays pinned to its CPU
# wheel); then `make test`, and when it passes `make lock` and commit constraints.txt.
upgrade: install
	$(BIN)/pip install --quiet --upgrade --upgrade-strategy eager torch==2.13.0 -e '.[test]'

lock:
	$(BIN)/pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/' > constraints.txt

install: $(STAMP)

demo: install
	$(WITH_HOME) $(BIN)/python -m scinterp_assets.demo

# Debian's chromium and chromium-driver for the browser test (defs/test_end_to_end.py), installed where this
# user may (root with apt-get); elsewhere that one test skips and says why.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	      || echo "browser test: apt-get could not install chromium and chromium-driver; the test will skip"; \
	  else echo "browser test: needs Debian's chromium and chromium-driver (apt-get as root); the test will skip"; fi; }

# pytest exits 5 when it collects nothing: make treats any non-zero exit as failure.
test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# exec: the shell becomes `scinterp ui`, so a SIGTERM to make reaches it and it stops the webserver and daemon
ui: install
	$(WITH_HOME) exec $(BIN)/scinterp ui --host 127.0.0.1 --port 3000

# Speed and memory against a naive reference measured in the same run (minutes; not part of `make test`).
bench: install
	$(BIN)/python -m benchmarks.attention_extraction
	$(BIN)/python -m benchmarks.degree_preserving_null
	$(BIN)/python -m benchmarks.incremental_value
	$(BIN)/python -m benchmarks.grouped_attention

# The study's workload end to end (scinterp.study-shape.yaml: 8,000 real genes, 2,000 controls, 280
# perturbations, a random-weight Geneformer V1-10M): every asset's wall time and peak memory (hours on 2 cores).
bench-study: install
	$(BIN)/python -m benchmarks.study_shape

# False-positive rate and power of the confirmatory tests on seeded null and planted worlds (about an hour on
# 2 cores; not part of `make test`). Exits non-zero when a null rate is above its nominal level.
calibrate: install
	$(BIN)/python -m benchmarks.calibration --study
	$(BIN)/python -m benchmarks.calibration --a01
	$(BIN)/python -m benchmarks.calibration --comparisons
	$(BIN)/python -m benchmarks.calibration --references
	$(BIN)/python -m benchmarks.calibration --cssi

clean:
	rm -rf var
