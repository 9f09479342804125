# coldtier: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: bootstrap demo test test-fast bench soak lint services-start services-stop clean

bootstrap:
	scripts/bootstrap.sh

## Installs what is missing, starts the dev services, loads synthetic trades, runs the
## offload job through scripts/spark-submit.sh on local[*] and prints the status table.
demo: bootstrap
	scripts/demo.sh

## The whole suite, slow fault-injection tests included (what CI runs).
test: bootstrap
	scripts/run-tests.sh $(PYTEST_ARGS)

## The fast suite: everything not marked slow.
test-fast: bootstrap
	scripts/run-tests.sh -m "not slow" $(PYTEST_ARGS)

## Tuning runs and benchmarks (conf/tuning/default.yaml, ~30 min on 2 cores):
## bench-results/<UTC timestamp>/ gets results.csv, results.md, plots and best-profile.yaml.
bench: bootstrap
	scripts/bench.sh $(BENCH_ARGS)

## The soak: the job under a supervisor for DURATION (default 10m) at 10x the production feed,
## with random faults (driver SIGKILL, ClickHouse/PostgreSQL restarts and SIGSTOP freezes,
## maintenance), then drain + reconcile: soak-results/<UTC timestamp>/soak.md and soak.png.
DURATION ?= 10m
soak: bootstrap
	scripts/soak.sh --duration $(DURATION) $(SOAK_ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check lib jobs tests scripts

services-start:
	scripts/dev-services.sh start

services-stop:
	scripts/dev-services.sh stop

clean:
	rm -rf build .pytest_cache .ruff_cache
