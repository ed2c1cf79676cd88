# Triad developer tasks. `make test` brings up PostgreSQL via scripts/services.sh.

TEST_THREADS ?= 2
BENCH_ARGS ?=
RUST_BACKTRACE ?= 1
export RUST_BACKTRACE

CARGO ?= cargo

.PHONY: run test bench fmt lint schema clean-data

run:
	$(CARGO) run --release -p triad-api --bin triad -- serve --demo

# services.sh prints `export TRIAD_TEST_DATABASE_URL=...`; eval it in the same
# shell line so that cargo sees it.
test:
	eval "$$(scripts/services.sh)" && $(CARGO) test --workspace -- --test-threads=$(TEST_THREADS)

bench:
	eval "$$(scripts/services.sh)" && $(CARGO) run --release -p triad-bench --bin triad-bench -- $(BENCH_ARGS)

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

schema:
	mkdir -p schemas
	$(CARGO) run -q -p triad-api --bin triad -- schema --events-dir schemas/events > schemas/schema.graphql

clean-data:
	rm -rf data/
