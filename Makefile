# Each target creates .venv and installs what it needs by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test
# pytest-xdist workers (each starts its own sshd and embedded host): more workers than cores
# keeps both cores busy while tests wait on SSH round trips, subprocesses and leases
WORKERS ?= 4
PYTEST := $(BIN)/python -m pytest -q -n $(WORKERS) --dist loadgroup

.PHONY: demo bytecode test test-slow lint diagram bench bench-delta bench-link soak clean i18n

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cloudshare demo

# The suites start over a thousand `cloudshare` and host processes: compile the package once so
# that none of them compiles it again (with PYTHONDONTWRITEBYTECODE=1 in the environment every
# process would compile every module it imports: ~20% of a command's CPU time).
bytecode: $(STAMP)
	$(BIN)/python -m compileall -q cloudshare_p2p statemachine

# the fast set: every flow against both real servers, in minutes
test: bytecode
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(PYTEST) -m "not slow"

# the slow set: the lock races, the demo, the timing checks; then the soak's short form alone
# (no workers, so its SOAK figures show and it has the machine to itself)
test-slow: bytecode
	$(PYTEST) -m "slow and not soak"
	$(BIN)/python -m pytest -q -m "slow and soak"

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

# Benches depend on `bytecode` too: without it each command they time would compile the package
# (0.1-0.3 s a command), a cost users do not pay.
bench: bytecode
	$(BIN)/python bench/bench_area.py

soak: bytecode
	CLOUDSHARE_SOAK=long CLOUDSHARE_REQUIRE_OPENSSH=1 $(BIN)/python -m pytest -q -s -m soak

bench-delta: bytecode
	$(BIN)/python bench/bench_delta.py --big

# the emulated office line (network namespaces, tbf, a delay proxy): needs root, ~4 min
bench-link: bytecode
	$(BIN)/python bench/office_link.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
