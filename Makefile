# edge-agent: the two commands that matter on a fresh machine are `make demo` and `make test`.
#
# `make install` (and `make demo`, `make run`) installs the runtime only: the core plus the
# `demo` extra (its embedded broker), versions from requirements.lock. `make test`, `make lint`
# and `make bench` add every runtime extra and the tools of requirements-dev.lock to the same
# .venv. README "Installing" has the sizes and times of both.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
DEV_STAMP = $(VENV)/.installed-dev
PIP     = $(BIN)/python -m pip --quiet

.PHONY: install dev native run demo test test-fast lint bench proto clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install --constraint requirements.lock -e '.[demo]'
	touch $(STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.lock requirements-nodeps.lock
	$(PIP) install --constraint requirements.lock --constraint requirements-dev.lock -e '.[all,test,bench]'
	$(PIP) install --no-deps -r requirements-nodeps.lock
	touch $(DEV_STAMP)

install: $(STAMP)  ## create .venv with the edge-agent command in .venv/bin (runtime only)

dev: $(DEV_STAMP) native  ## add every extra and the test, lint and bench tools to .venv; compile robust

NATIVE_STAMP = $(VENV)/.installed-native
$(NATIVE_STAMP): $(STAMP) requirements-dev.lock
	$(PIP) install --constraint requirements.lock --constraint requirements-dev.lock -e '.[native]'
	touch $(NATIVE_STAMP)

# robust's per-reading path compiled by mypyc, beside its source (~1 min; nothing when current).
# Needs a C compiler and the Python headers; without it robust runs interpreted (native.py).
native: $(NATIVE_STAMP)  ## compile robust's per-reading path (scripts/build_native.py)
	$(BIN)/python scripts/build_native.py

run: install  ## run the agent with config/agent.example.yaml
	$(BIN)/edge-agent run -c config/agent.example.yaml

demo: install  ## embedded broker + agent + simulator; Ctrl-C stops all (BROKER=host:port to use yours)
	$(BIN)/edge-agent demo $(if $(BROKER),--broker $(BROKER),)

test: dev  ## the whole suite against real mosquitto, S3 (moto server) and SQLite
	EDGE_AGENT_REQUIRE_COMPILED=1 $(BIN)/pytest -q -p no:cacheprovider --durations=15

test-fast: dev
	$(BIN)/pytest -q -x -m "not slow"

lint: dev
	$(BIN)/ruff check edge_agent tests bench

bench: dev  ## performance report: bench/report.md and bench/report.json
	$(BIN)/python -m bench.run $(BENCH_ARGS)

proto: dev  ## regenerate edge_agent/sparkplug/sparkplug_b_pb2.py from its .proto (grpcio-tools, a test dependency)
	$(BIN)/python -m grpc_tools.protoc -Iedge_agent/sparkplug --python_out=edge_agent/sparkplug edge_agent/sparkplug/sparkplug_b.proto

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache edge_agent/detectors/robust*.so edge_agent/detectors/robust.native.sha256
