# edge-agent: the two commands that matter on a fresh machine are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: install run demo test test-fast lint bench proto clean

$(STAMP): pyproject.toml requirements.lock requirements-nodeps.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)  ## create .venv with the edge-agent command in .venv/bin

run: install  ## run the agent with config/agent.example.yaml
	$(BIN)/edge-agent run -c config/agent.example.yaml

demo: install  ## embedded broker + agent + simulator; Ctrl-C stops all (BROKER=host:port to use yours)
	$(BIN)/edge-agent demo $(if $(BROKER),--broker $(BROKER),)

test: install  ## the whole suite against real mosquitto, S3 (moto server) and SQLite
	$(BIN)/pytest -q -p no:cacheprovider --durations=15

test-fast: install
	$(BIN)/pytest -q -x -m "not slow"

lint: install
	$(BIN)/ruff check edge_agent tests bench

bench: install  ## performance report: bench/report.md and bench/report.json
	$(BIN)/python -m bench.run $(BENCH_ARGS)

proto: install  ## regenerate edge_agent/sparkplug/sparkplug_b_pb2.py from its .proto (grpcio-tools, a test dependency)
	$(BIN)/python -m grpc_tools.protoc -Iedge_agent/sparkplug --python_out=edge_agent/sparkplug edge_agent/sparkplug/sparkplug_b.proto

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
