# Everything installs into .venv on first use; a fresh Debian 12 with Python 3.11 is enough.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SEEDS ?= 5000
SEED_START ?= 0

.PHONY: venv test lint format sim bench-raftcore clean proto run bench deploy-check image chaos

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

## test: the whole suite (unit, transcript and 500+ simulator seeds); runs on 2 cores via xdist
test: venv
	$(PY) -m pytest -n 2 -q

## run: a local 3-member cluster, data under ./data, clients on 127.0.0.1:7101-7103 (Ctrl-C stops)
run: venv
	$(PY) -m kvstore.devcluster --data data

## bench: a 3-member cluster measured against a bare gRPC echo server (prints numbers)
bench: venv
	$(PY) benchmarks/cluster_bench.py

## deploy-check: build and validate the manifests, Dockerfile, alerts and dashboard
deploy-check: venv
	$(PY) -m pytest -q tests/deploy

## image: the server image (needs a Docker engine)
image:
	docker build -f deploy/Dockerfile -t kvstore:dev .

## lint: ruff (lint and format check) and mypy --strict on raftcore
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict raftcore

format: venv
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## chaos: the long chaos run: faults on a real cluster under random clients, checked for
## linearizability; history, verdict and timeline.png in CHAOS_RESULTS (exit 1 on a violation)
CHAOS_NODES ?= 5
CHAOS_DURATION ?= 600
CHAOS_SEED ?= $(shell date +%s)
CHAOS_RESULTS ?= chaos-results/$(shell date +%Y%m%d-%H%M%S)
chaos: venv
	$(PY) -m tests.chaos.runner --nodes $(CHAOS_NODES) --duration $(CHAOS_DURATION) \
		--seed $(CHAOS_SEED) --results $(CHAOS_RESULTS)

## sim: more simulator seeds, e.g. make sim SEEDS=20000 SEED_START=1000
sim: venv
	$(PY) -m tests.sim.run --seeds $(SEEDS) --start $(SEED_START)

## bench-raftcore: entries per CPU-second through a simulated 5-server cluster
bench-raftcore: venv
	$(PY) benchmarks/raftcore_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

## proto: regenerate the protobuf and gRPC modules under kvstore/ (they are committed)
proto: venv
	$(PY) -m grpc_tools.protoc -I proto --python_out=. --pyi_out=. --grpc_python_out=. \
		proto/kvstore/v1/kv.proto proto/kvstore/raft/v1/peer.proto proto/kvstore/raft/v1/command.proto
