# `make check` is the one command: it creates .venv when missing, installs the
# pinned CPU builds (constraints.txt), lints and runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP = $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
PYTEST_ARGS ?=
# Keras backend: tensorflow (default, what CI runs), torch, or jax (make check KERAS_BACKEND=jax).
# jax is an optional extra, installed only when that backend is asked for.
KERAS_BACKEND ?= tensorflow
export KERAS_BACKEND
comma := ,
EXTRAS := all$(if $(filter jax,$(KERAS_BACKEND)),$(comma)jax)

.DEFAULT_GOAL := help
.PHONY: help venv lint test check bench soak sensitivity mxnet clean

help: ## list the targets
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
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

# MXNet 1.9.1 (retired, Apache Attic) needs numpy<1.24, which TensorFlow 2.21 cannot share: its own venv,
# with only numpy, hypothesis, pytest and mxnet. The whole suite runs there: the core and the MXNet
# properties run, every test that needs torch or Keras skips with the reason.
MXNET_VENV ?= .venv-mxnet
MXNET_BIN := $(MXNET_VENV)/bin
MXNET_STAMP := $(MXNET_VENV)/.installed-stamp

$(MXNET_STAMP): pyproject.toml constraints-mxnet.txt
	test -x $(MXNET_BIN)/python || $(PYTHON) -m venv $(MXNET_VENV)
	$(MXNET_BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints-mxnet.txt -e '.[mxnet]' 'pytest>=8'
	touch $(MXNET_STAMP)

mxnet: $(MXNET_STAMP) ## MXNet Gluon in .venv-mxnet (numpy<1.24): core and MXNet properties, torch/Keras skip
	$(MXNET_BIN)/python -m pytest $(PYTEST_ARGS)
	@# TODO(golden vectors): verify the shipped vectors against MXNet here once `python -m equivalence verify` lands.
	@echo "make mxnet: golden-vector verification against MXNet is not wired yet (TODO: needs the verify CLI)"

clean: ## remove the venvs and caches
	rm -rf $(VENV) $(MXNET_VENV) .pytest_cache .hypothesis .ruff_cache
