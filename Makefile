# Two commands on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers for `make test` (one per core of the 2-core reference machine).
TEST_WORKERS ?= 2
NODE_STAMP := node_modules/.installed

.PHONY: run run-his prepare test lint audit install clean browser-deps bench-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# htmx and WeUI for the patient pages, pinned in package-lock.json, served from node_modules.
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $(NODE_STAMP)

# The browser tests drive Debian's Chromium (never `playwright install`) and need a CJK font.
browser-deps:
	command -v chromium >/dev/null || apt-get install -y chromium || \
		(apt-get update && apt-get install -y chromium)
	fc-list | grep -qi 'noto sans cjk' || apt-get install -y fonts-noto-cjk || \
		(apt-get update && apt-get install -y fonts-noto-cjk)

# bench/browse.py drives the server with wrk, which does not compete for the CPU as a Python client would.
bench-deps:
	command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)

install: $(STAMP) $(NODE_STAMP)

# The two commands of a developer's machine run in development mode: sandbox payments, SMS codes
# in the log, keys generated under var/. Production is any other start (see README).
run run-his prepare test: export GUAHAO_ENV := development

# Migrate, gather static files, load the demo hospital (and its staff accounts).
prepare: $(STAMP) $(NODE_STAMP)
	$(BIN)/guahao migrate --noinput
	$(BIN)/guahao collectstatic --noinput --verbosity 0
	$(BIN)/guahao demo

run: prepare
	$(BIN)/guahao run

# As run, plus the HIS simulator on 127.0.0.1:9100 serving a second demo hospital (HISDEMO) whose
# numbers, locks and registrations live in the simulator (see README, "Running against the HIS simulator").
run-his: prepare
	$(BIN)/guahao run --his-simulator 127.0.0.1:9100

lint: $(STAMP)
	$(BIN)/ruff check .

# Known vulnerabilities in the installed dependencies (needs access to PyPI's JSON API or OSV).
audit: $(STAMP)
	$(BIN)/pip-audit --local --skip-editable

test: $(STAMP) $(NODE_STAMP) browser-deps
	$(BIN)/ruff check .
	$(BIN)/pytest -n $(TEST_WORKERS)

clean:
	rm -rf $(VENV) var/*.sqlite3* var/static node_modules
