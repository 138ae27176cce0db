# Each target creates .venv and installs what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: demo test lint diagram bench bench-delta soak clean i18n

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cloudshare demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

diagram: $(STAMP)
	$(BIN)/cloudshare diagram > diagrams/state-machine.mmd

# Message catalogs: extract (our modules + the pinned click) into messages.pot, merge into each
# locale/LANG/LC_MESSAGES/cloudshare.po, compile the .mo files (committed; shipped as package data).
i18n: $(STAMP)
	$(BIN)/python -m cloudshare_p2p.i18n_tools update
	$(BIN)/python -m cloudshare_p2p.i18n_tools compile

bench: $(STAMP)
	$(BIN)/python bench/bench_area.py

soak: $(STAMP)
	CLOUDSHARE_SOAK=long CLOUDSHARE_REQUIRE_OPENSSH=1 $(BIN)/python -m pytest -q -s -m soak

bench-delta: $(STAMP)
	$(BIN)/python bench/bench_delta.py --big

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
