# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PGPORT ?= 5432

.PHONY: install demo test test-fast services bench bench-observe bench-policies bench-full bench-replay bench-cycle bench-api bench-budgets bench-estimates clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/spillover demo

# Everything the tests talk to over real sockets: PostgreSQL on 127.0.0.1:$(PGPORT).
services:
	@bash .ci/services

test: $(STAMP) services
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

bench: $(STAMP)
	$(BIN)/python -m spillover.simulations.bench_placement --jobs 1000,10000,50000 --targets 50 --runs 3

# Spillover against the Starburst baselines on the shared workloads; results in simulations/results/
bench-policies: $(STAMP)
	$(BIN)/python -m spillover.simulations.bench_policies $(if $(LIMIT),--limit $(LIMIT),) $(if $(POINTS),--points $(POINTS),)

# The whole shared workloads under every policy (about an hour and a half); results in simulations/results/*-full/
bench-full: $(STAMP)
	$(BIN)/python -m spillover.simulations.bench_policies --scenario gavel-full,philly-full

# How long `spillover simulate` takes on the whole of gavel-synth-dev.csv (20,000 jobs), No-Wait and spillover-job
bench-replay: $(STAMP)
	$(BIN)/python -m spillover.simulations.bench_replay

# Monthly team budgets against static per-team cloud GPU caps on philly-vc; results in simulations/results/budgets/
bench-budgets: $(STAMP)
	$(BIN)/python -m spillover.simulations.bench_budgets $(if $(LIMIT),--limit $(LIMIT),)

# Estimated start against the real start, and against the naive "now" (LIMIT=0: the whole workload)
bench-estimates: $(STAMP)
	$(BIN)/python -m spillover.simulations.bench_estimates $(if $(LIMIT),--limit $(LIMIT),)

# Cycle time against the number of finished jobs in the store
bench-cycle: $(STAMP)
	$(BIN)/python -m spillover.simulations.bench_cycle

# Submit throughput of the HTTP API under uvicorn, batched and one job per request, on SQLite and PostgreSQL
bench-api: $(STAMP) services
	$(BIN)/python -m spillover.simulations.bench_api

bench-observe: $(STAMP)
	$(BIN)/python -m spillover.simulations.bench_observe --nodes 1000 --pods 5000

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info spillover-demo.db* .spillover
