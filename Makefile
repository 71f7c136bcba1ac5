# Quartet tasks. Every target creates the virtual environment from requirements.txt when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv train test lint format bench tokenizer data clean-outputs

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

## The main job: chat SFT of the tiny model on the bundled dialogues (a few minutes on 2 CPU cores).
train: venv
	$(PY) train.py $(ARGS)

## The test suite (the command CI runs).
test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

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
