# `make check` is the one command: it creates .venv when missing, installs the
# pinned CPU builds (constraints.txt), lints and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv lint test check bench soak sensitivity clean

help: ## list the targets
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[all]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv and install the package with the pinned CPU builds

lint: venv ## ruff
	$(BIN)/ruff check equivalence tests conftest.py

test: venv ## pytest (pass PYTEST_ARGS="-n auto" for xdist)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

check: lint test ## lint and test: the README's command

bench: venv ## benchmark the check path against the naive loop and the floor (writes bench.json)
	$(BIN)/python -m equivalence.bench

soak: venv ## 100,000+ random cases over all workers (pytest-xdist); writes soak.json
	$(BIN)/python -m pytest tests/test_soak.py -m soak -n auto --hypothesis-profile soak \
		--stats-json soak.json -q

sensitivity: venv ## bisect the smallest activation drift the suite catches, per dtype
	$(BIN)/python -m tests.sensitivity

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
