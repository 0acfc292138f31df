# The README's two commands: `make run` and `make test`.
SHELL := bash
# Absolute: cargo runs tests from their package's directory.
TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))
.DEFAULT_GOAL := help

.PHONY: help test lint venv browser build run stop demo convergence-long fuzz bench bench-instructions chaos

# Every target carries its one line of help after `##`; `make help` lists them in order.
help: ## this list
	@awk -F':.*## ' '/^[a-z-]+:.*## / { printf "make %-17s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

venv: ## install the pinned SecantusDB into .venv (the tests and make run need it)
	@bash scripts/ensure-venv.sh

lint: ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

test: lint venv browser ## formatting, clippy and every test on real servers
	cargo test --workspace --locked

browser: ## Debian's chromium and playwright-core for the status page's browser test
	@bash scripts/ensure-browser.sh

build: ## build trace-writer, trace-api and jobtrace (debug)
	cargo build --locked -p trace-writer -p trace-api -p jobtrace

run: venv build ## run trace-writer and trace-api locally on an embedded SecantusDB
	@bash scripts/run-local.sh

stop: ## stop what make run started
	@bash scripts/run-local.sh stop

demo: build ## (with make run up) enqueue jobs, play a worker, watch them converge
	@target/debug/jobtrace demo

convergence-long: venv ## the convergence tests with 100,000 histories, in memory and in the database
	JOBTRACE_PURE_HISTORIES=100000 cargo test --release --locked -p job-trace-tests --test convergence -- --nocapture
	@bash bench/ensure-tools.sh
	JOBTRACE_DATABASE=rust JOBTRACE_HISTORIES=100000 \
	  cargo test --release --locked -p job-trace-tests --test store -- --nocapture the_store_agrees

# Both fuzz targets (fuzz/, outside the workspace): first the regression inputs, then
# FUZZ_RUNS fresh inputs each from the committed corpus (new finds go to fuzz/target).
# cargo-fuzz passes nightly-only flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS ?= push_decode api_params
fuzz: ## both fuzz targets: the regression inputs, then FUZZ_RUNS fresh inputs each
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
	  if compgen -G "regressions/$$target/*" >/dev/null; then \
	    RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --debug-assertions $$target regressions/$$target/* || exit 1; \
	  fi; \
	  mkdir -p target/corpus/$$target && \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --debug-assertions $$target target/corpus/$$target corpus/$$target -- \
	    -runs=$(FUZZ_RUNS) -workers=1 -print_final_stats=1 || exit 1; \
	done

# Throughput, latency, CPU and memory of both functions against their own SecantusDB,
# beside the database's own ceiling; prints a table and writes bench/results.json.
# BENCH_QUICK=1 make bench: one short run on a small data set.
bench: venv ## throughput, latency, CPU and memory of both functions (BENCH_QUICK=1: short)
	@bash bench/ensure-tools.sh
	cargo build --release --locked -p trace-writer -p trace-api -p job-trace-bench
	"$(TARGET_DIR)/release/bench"

bench-instructions: venv ## user-space instructions per request under callgrind (BENCH_INSTRUCTIONS_BEFORE=DIR: compare another build's binaries)
	@bash bench/ensure-tools.sh
	cargo build --release --locked -p trace-writer -p trace-api -p job-trace-bench
	BENCH_QUICK=1 BENCH_SECONDS=$${BENCH_SECONDS:-8} "$(TARGET_DIR)/release/bench" instructions

# 10,000 jobs through the Pub/Sub emulator into the trace-writer binary while the
# database is SIGKILLed twice and the writer SIGTERMed once (tests/tests/chaos.rs).
# Not part of `make test`: the test is #[ignore]d there. JOBTRACE_STORE_WRITE=cas runs
# it against the cas write strategy (default pipeline); JOBTRACE_CHAOS_JOBS=N shortens it.
chaos: venv ## 10,000 jobs through the emulator while the database and writer are killed
	cargo build --release --locked -p trace-writer
	JOBTRACE_WRITER_BIN="$(TARGET_DIR)/release/trace-writer" \
	  cargo test --locked -p job-trace-tests --test chaos -- --ignored --nocapture
