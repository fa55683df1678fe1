# `make report` and `make check` create .venv when missing and install the pinned
# CPU builds (constraints.txt); `make help` lists every target.
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
space := $(subst ,, )
EXTRAS := all$(if $(filter jax,$(KERAS_BACKEND)),$(comma)jax)

REPORT_DIR ?= report
GOLDEN ?= golden
NOX_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv lint test check report baseline guard matrix bench soak sensitivity mxnet clean portability probes \
	portability-cell matrix-log keras2 history history-check runtimes converters ratios
CELL ?= lowest
SHELL := /bin/bash

help: ## list the targets
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(EXTRAS)]'
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

portability: venv ## the suite and the guard on every kernel path this CPU can emulate; one table (report/portability/)
	$(BIN)/python -m equivalence.guard.portability --out $(REPORT_DIR)/portability -- $(PYTEST_ARGS)

probes: venv ## probe every named difference here: its scope (dtypes, shapes) beside the CPUs it was recorded on
	$(BIN)/python -m equivalence.guard.portability --probes --out $(REPORT_DIR)/portability

portability-cell: venv ## one kernel path (CELL=lowest, native, avx2-machine, ...): the suite and the guard there
	$(BIN)/python -m equivalence.guard.portability --cell $(CELL) --out $(REPORT_DIR)/portability -- $(PYTEST_ARGS)

matrix: venv ## nox: check and guard under tensorflow-cpu 2.20 and 2.21 with torch 2.13.0 (NOX_ARGS="-s guard")
	$(BIN)/nox $(NOX_ARGS)

matrix-log: venv ## make matrix, its output kept in report/matrix.log and summed up in $GITHUB_STEP_SUMMARY when set
	mkdir -p $(REPORT_DIR)
	set -o pipefail; $(BIN)/nox $(NOX_ARGS) 2>&1 | tee $(REPORT_DIR)/matrix.log
	if [ -n "$$GITHUB_STEP_SUMMARY" ]; then { echo '## Version matrix'; echo '```'; \
		grep -E '^nox > (Session|Ran)|^(OK|FAIL)|cases changed|bit for bit' $(REPORT_DIR)/matrix.log; echo '```'; } \
		>> "$$GITHUB_STEP_SUMMARY"; fi

# One pair at a time, each in its own throwaway venv (.nox/history-venvs/<label>, ~2 GB: twenty of them would not fit
# on a small disk), removed after its run, failed or not, unless HISTORY_KEEP=1; a failed pair fails the target once
# every pair has run. HISTORY_PAIRS picks some of the labels.
HISTORY_KEEP ?= 0
HISTORY_PAIRS ?= $$($(BIN)/python -c "import noxfile; print(' '.join(noxfile.HISTORY_LABELS))")

history: venv ## nox: replay golden/ under Keras 2 and every Keras 3 release line since 3.0, then print the numerical changelog
	failed=; for label in $(HISTORY_PAIRS); do \
		$(BIN)/nox -s "history($$label)" --envdir .nox/history-venvs/$$label $(NOX_ARGS) || failed="$$failed $$label"; \
		[ "$(HISTORY_KEEP)" = 1 ] || rm -rf .nox/history-venvs/$$label; \
	done; [ -z "$$failed" ] || { echo "FAIL: history failed under$$failed"; exit 1; }
	$(BIN)/python -m equivalence.guard.history changelog history $(HISTORY_PAIRS)

history-check: venv ## nox: the suite (smoke profile) under each release pair of make history, one after another
	failed=; for label in $(HISTORY_PAIRS); do \
		$(BIN)/nox -s "history-check($$label)" --envdir .nox/history-venvs/$$label $(NOX_ARGS) || failed="$$failed $$label"; \
		[ "$(HISTORY_KEEP)" = 1 ] || rm -rf .nox/history-venvs/$$label; \
	done; [ -z "$$failed" ] || { echo "FAIL: history-check failed under$$failed"; exit 1; }

bench: venv ## benchmark the check path against the naive loop and the floor (writes bench.json)
	$(BIN)/python -m equivalence.guard.bench

soak: venv ## 100,000+ random cases over all workers (pytest-xdist); writes soak.json
	$(BIN)/python -m pytest tests/core/test_soak.py -m soak -n auto --hypothesis-profile soak \
		--stats-json soak.json -q

sensitivity: venv ## bisect the smallest activation drift the suite catches, per dtype
	$(BIN)/python -m tests.sensitivity

RATIOS_ARGS ?=
ratios: venv ## worst error/bound ratio per layer kind and dtype over random models (ratios.json; RATIOS_ARGS="-n 40")
	$(BIN)/python -m tests.kind_ratios $(RATIOS_ARGS)

# The runtimes. make check runs the tests written for ort, keras_graph, keras_xla and torch_export (the registry's
# own_tests_default); here: those of every runtime at 4x the examples (torch.compile and LiteRT too), then the
# registry-wide tests with only the runtimes selected (what needs torch or Keras beside them skips: make check
# ran it), verify and report for each beside torch and Keras, and the table of worst ratios and bit-for-bit pairs.
RUNTIMES ?= ort keras_graph keras_xla torch_compile litert litert_fp16w torch_export
RUNTIME_TESTS := tests/frameworks/test_runtimes.py tests/frameworks/test_litert.py tests/frameworks/test_torch_export.py
runtimes: venv ## the runtimes: their own tests at 4x the examples, the registry-wide tests, verify, report, the table
	$(BIN)/python -m pytest --frameworks torch,keras,$(subst $(space),$(comma),$(RUNTIMES)) $(RUNTIME_TESTS) \
		--hypothesis-profile runtimes $(PYTEST_ARGS)
	$(BIN)/python -m pytest --frameworks $(subst $(space),$(comma),$(RUNTIMES)) $(RUNTIME_TESTS:%=--ignore=%) \
		--hypothesis-profile registry -q -rfE $(PYTEST_ARGS)
	for runtime in $(RUNTIMES); do $(BIN)/python -m equivalence verify $(GOLDEN) --framework $$runtime || exit 1; done
	$(BIN)/python -m equivalence report --framework torch --framework keras $(RUNTIMES:%=--framework %) \
		--out $(REPORT_DIR)/runtimes --quiet
	$(BIN)/python -m equivalence.guard.runtimes --framework torch --framework keras $(RUNTIMES:%=--framework %)

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

mxnet: $(MXNET_STAMP) ## MXNet Gluon in .venv-mxnet (numpy<1.24): MXNet properties, then the golden vectors (torch's and Keras' outputs)
	$(MXNET_BIN)/python -m pytest $(PYTEST_ARGS)
	$(MXNET_BIN)/python -m equivalence verify $(GOLDEN) --framework mxnet

# Keras 2 (tf-keras, TF_USE_LEGACY_KERAS=1) in its own venv: tf-keras depends on `tensorflow`, which would pull a
# second, CUDA-sized TensorFlow beside tensorflow-cpu; installed with --no-deps beside tensorflow-cpu it runs
# (same version, same TF). The whole suite runs on Keras 2 there, then the Keras 2 baseline is verified
# (tests/golden-keras2; golden/ is Keras 3's, and verifying it under Keras 2 fails on hard_sigmoid by design:
# tests/frameworks/test_keras_migration.py checks exactly that).
KERAS2_VENV ?= .venv-keras2
KERAS2_BIN := $(KERAS2_VENV)/bin
# The stamp names the versions that go in with --no-deps, so changing one reinstalls.
KERAS2_STAMP = $(KERAS2_VENV)/.installed-tf-keras-$(TF_KERAS)
TF_KERAS ?= 2.21.0

# A venv beside .venv: $(1) the folder, $(2) the package's extras, $(3) what goes in with --no-deps beside them.
define side_venv
test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
$(1)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[$(2)]'
$(1)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps $(3)
touch $@
endef

$(KERAS2_STAMP): pyproject.toml constraints.txt
	$(call side_venv,$(KERAS2_VENV),all,tf-keras==$(TF_KERAS))

keras2: $(KERAS2_STAMP) ## Keras 2 (tf-keras) in .venv-keras2: the suite on Keras 2, then its golden vectors
	TF_USE_LEGACY_KERAS=1 KERAS_BACKEND=tensorflow $(KERAS2_BIN)/python -m equivalence env
	TF_USE_LEGACY_KERAS=1 KERAS_BACKEND=tensorflow $(KERAS2_BIN)/python -m pytest $(PYTEST_ARGS)
	TF_USE_LEGACY_KERAS=1 KERAS_BACKEND=tensorflow $(KERAS2_BIN)/python -m equivalence verify tests/golden-keras2

# The converters (onnx2tf, tf2onnx through Keras' ONNX export) in their own venv: tf-keras, which onnx2tf writes its
# models with, goes in with --no-deps as in make keras2. The round trips run as tests (marker `converters`, left out
# of make check's selection); each conversion runs in a child process, as importing onnx2tf sets
# TF_USE_LEGACY_KERAS=1 for its whole process.
CONVERTERS_VENV ?= .venv-converters
CONVERTERS_BIN := $(CONVERTERS_VENV)/bin
CONVERTERS_STAMP = $(CONVERTERS_VENV)/.installed-tf-keras-$(TF_KERAS)-onnx2torch-$(ONNX2TORCH)
# onnx2torch goes in with --no-deps too: it requires torchvision, whose PyPI wheels are built against the CUDA torch
# and fail to load beside torch 2.13.0+cpu (torchvision::nms missing); it imports torchvision only for its
# NonMaxSuppression and RoiAlign converters, so the round trip converts in a child process without it.
ONNX2TORCH ?= 1.5.15

$(CONVERTERS_STAMP): pyproject.toml constraints.txt
	$(call side_venv,$(CONVERTERS_VENV),all$(comma)converters,tf-keras==$(TF_KERAS) onnx2torch==$(ONNX2TORCH))

converters: $(CONVERTERS_STAMP) ## converters' round trips in .venv-converters: torch -> ONNX -> onnx2tf (SavedModel, .tflite, .h5), Keras -> ONNX -> onnx2torch
	$(CONVERTERS_BIN)/python -m pytest tests -m converters $(PYTEST_ARGS)

clean: ## remove the venvs, the nox venvs and caches
	rm -rf $(VENV) $(MXNET_VENV) $(KERAS2_VENV) $(CONVERTERS_VENV) .nox .pytest_cache .hypothesis .ruff_cache
