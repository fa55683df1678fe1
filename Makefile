# `make report` and `make check` create .venv when missing and install the pinned
# CPU builds (constraints.txt); `make help` lists every target.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
REPORT_DIR ?= report
GOLDEN ?= golden
NOX_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv lint test check report baseline guard matrix clean

help: ## list the targets
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[all]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the package with the pinned CPU builds

lint: venv ## ruff
	$(BIN)/ruff check equivalence tests conftest.py noxfile.py

test: venv ## pytest (pass PYTEST_ARGS="-n auto" for xdist)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: lint test ## lint and test

report: venv ## the README's main command: run the report matrix, print the table, write report/ (JSON, Markdown, PNG)
	$(BIN)/python -m equivalence report --out $(REPORT_DIR)

baseline: venv ## record golden vectors into golden/ with the installed frameworks (after changing the matrix)
	$(BIN)/python -m equivalence record $(GOLDEN)

guard: venv ## verify the installed frameworks against the shipped golden vectors in golden/
	$(BIN)/python -m equivalence verify $(GOLDEN)

matrix: venv ## nox: check and guard under tensorflow-cpu 2.20 and 2.21 with torch 2.13.0 (NOX_ARGS="-s guard")
	$(BIN)/nox $(NOX_ARGS)

clean: ## remove the venv, the nox venvs and caches
	rm -rf $(VENV) .nox .pytest_cache .hypothesis .ruff_cache
