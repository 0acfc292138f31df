# The README's two commands: `make run` and `make test`.
SHELL := bash
# Absolute: cargo runs tests from their package's directory.
TARGET_DIR := $(abspath $(or $(CARGO_TARGET_DIR),target))
.DEFAULT_GOAL := help

.PHONY: help test lint venv run stop build demo convergence-long

help:
	@echo "make run    - run trace-writer and trace-api locally on an embedded SecantusDB"
	@echo "make stop   - stop what make run started"
	@echo "make demo   - (with make run up) enqueue jobs, play a worker, watch them converge"
	@echo "make test   - formatting, clippy and every test on real servers"
	@echo "make convergence-long - the convergence tests with 100,000 histories, in memory and through the database"

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
	cargo build --locked -p trace-writer -p trace-api -p jobtrace

run: venv build
	@bash scripts/run-local.sh

stop:
	@bash scripts/run-local.sh stop

demo: build
	@target/debug/jobtrace demo

convergence-long: venv
	JOBTRACE_PURE_HISTORIES=100000 cargo test --release --locked -p job-trace-tests --test convergence -- --nocapture
	@bash bench/ensure-tools.sh
	JOBTRACE_DATABASE=rust JOBTRACE_HISTORIES=100000 \
	  cargo test --release --locked -p job-trace-tests --test store -- --nocapture the_store_agrees

# Both fuzz targets (fuzz/, outside the workspace): first the regression inputs, then
# FUZZ_RUNS fresh inputs each from the committed corpus (new finds go to fuzz/target).
# cargo-fuzz passes nightly-only flags; RUSTC_BOOTSTRAP lets the stable toolchain take them.
.PHONY: fuzz
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS ?= push_decode api_params
fuzz:
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
.PHONY: bench
bench: venv
	@bash bench/ensure-tools.sh
	cargo build --release --locked -p trace-writer -p trace-api -p job-trace-bench
	"$(TARGET_DIR)/release/bench"

# 10,000 jobs through the Pub/Sub emulator into the trace-writer binary while the
# database is SIGKILLed twice and the writer SIGTERMed once (tests/tests/chaos.rs).
# Not part of `make test`: the test is #[ignore]d there. JOBTRACE_STORE_WRITE=cas runs
# it against the cas write strategy (default pipeline); JOBTRACE_CHAOS_JOBS=N shortens it.
.PHONY: chaos
chaos: venv
	cargo build --release --locked -p trace-writer
	JOBTRACE_WRITER_BIN="$(TARGET_DIR)/release/trace-writer" \
	  cargo test --locked -p job-trace-tests --test chaos -- --ignored --nocapture
