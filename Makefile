# The two commands the README promises: `make demo` and `make test`.
# Both create .venv when it is missing and install the package with its extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck check-proto proto pytest redis-server bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	# As pip does for installed packages: snakepit's bytecode, once, not in
	# every worker process the suite starts (they would all compile it).
	$(BIN)/python -m compileall -q snakepit tests
	# Likewise pytest's assertion-rewritten bytecode (pytest 9 rewrites the whole
	# package of an editable install's plugin, and the tests): written once here,
	# not by every xdist process of the first run at the same time.
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest --collect-only -q -p no:randomly tests \
		> $(VENV)/collect.log || { cat $(VENV)/collect.log; exit 1; }
	# And hypothesis's unicode tables (.hypothesis/unicode_data), built on the
	# first use of st.text(): ~0.8 s of CPU in each xdist process otherwise.
	$(BIN)/python -c "from hypothesis import given, strategies as st; given(st.text())(lambda s: None)()"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/pool_demo.py

test: $(STAMP) lint typecheck check-proto pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict snakepit tests

# snakepit/_wire/_proto is generated from protos/ and committed; the check fails on any drift.
proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py

check-proto: $(STAMP)
	$(BIN)/python scripts/gen_proto.py --check

# The Redis session tests need a redis-server (Debian's package): installed here
# when missing, as root or with a sudo that asks for no password. It never fails
# the build: without it those tests are skipped and say why, except where
# SNAKEPIT_REQUIRE_REDIS=1 (.ci/run) makes them fail instead.
redis-server: $(STAMP)
	@command -v redis-server >/dev/null || { \
		if [ "$$(id -u)" = 0 ]; then sudo=; else sudo="sudo -n"; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		{ $$sudo apt-get install -y -qq redis-server || \
		  { $$sudo apt-get update -qq && $$sudo apt-get install -y -qq redis-server; }; \
		} >$(VENV)/redis-install.log 2>&1 \
		&& echo "installed redis-server (Debian's package)" \
		|| echo "redis-server could not be installed (see $(VENV)/redis-install.log):" \
			"the Redis tests will be skipped"; \
	}

# Random order (pytest-randomly) and in parallel (xdist, one process more than
# CPUs: many tests wait on worker processes, which need a CPU of their own;
# worksteal: an idle xdist process takes tests queued on a busy one, so the run
# does not end on one process's queue); prints the suite's wall time. The suite passes with any -n, -n auto included.
# Bytecode caching stays on even where PYTHONDONTWRITEBYTECODE is set: without
# it every worker process the suite starts (~140) compiles snakepit from source
# and pytest rewrites every test module again in each xdist process.
pytest: $(STAMP) redis-server
	@start=$$(date +%s%N); \
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -p randomly -n $$(($$(nproc) + 1)) --dist worksteal -q tests; rc=$$?; \
	ms=$$(( ($$(date +%s%N) - start) / 1000000 )); \
	echo "suite wall time: $$((ms / 1000)).$$((ms % 1000 / 100)) s"; exit $$rc

# Bytecode caching on, as on users' machines (a cold start must not compile snakepit).
bench: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python benchmarks/otp_call.py
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python benchmarks/transport.py
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python benchmarks/pool_vs_peers.py --json benchmarks/pool_vs_peers.json
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python benchmarks/sessions.py --json benchmarks/sessions.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis benchmarks/.venv-triotp
