# Two commands on a fresh machine: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The two commands of a developer's machine run in development mode: sandbox payments, SMS codes
# in the log, keys generated under var/. Production is any other start (see README).
run test: export GUAHAO_ENV := development

run: $(STAMP)
	$(BIN)/guahao migrate --noinput
	$(BIN)/guahao collectstatic --noinput --verbosity 0
	$(BIN)/guahao demo
	$(BIN)/guahao run

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

clean:
	rm -rf $(VENV) var/*.sqlite3* var/static
