# The README's two commands: `make run` and `make test`.
SHELL := bash
.DEFAULT_GOAL := help

.PHONY: help test lint venv run stop build convergence-long

help:
	@echo "make run    - run trace-writer and trace-api locally on an embedded SecantusDB"
	@echo "make stop   - stop what make run started"
	@echo "make test   - formatting, clippy and every test on real servers"
	@echo "make convergence-long - the rules' convergence test with 100,000 histories"

venv:
	@bash scripts/ensure-venv.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

test: lint venv browser
	cargo test --workspace --locked

# Debian's chromium and playwright-core for the status page's browser test.
.PHONY: browser
browser:
	@bash scripts/ensure-browser.sh

build:
	cargo build --locked -p trace-writer -p trace-api

run: venv build
	@bash scripts/run-local.sh

stop:
	@bash scripts/run-local.sh stop

convergence-long: venv
	JOBTRACE_PURE_HISTORIES=100000 cargo test --release --locked -p job-trace-tests --test convergence -- --nocapture
	JOBTRACE_HISTORIES=3000 cargo test --release --locked -p job-trace-tests --test store -- --nocapture the_store_agrees

# Throughput, latency, CPU and memory of both functions against their own SecantusDB,
# beside the database's own ceiling; prints a table and writes bench/results.json.
# BENCH_QUICK=1 make bench: one short run on a small data set.
.PHONY: bench
bench:
	@bash bench/ensure-tools.sh
	cargo build --release --locked -p trace-writer -p trace-api -p job-trace-bench
	$${CARGO_TARGET_DIR:-target}/release/bench
