# Triad developer tasks. `make test` brings up PostgreSQL via scripts/services.sh.

TEST_THREADS ?= 2
BENCH_ARGS ?=
RUST_BACKTRACE ?= 1
export RUST_BACKTRACE

CARGO ?= cargo

.PHONY: run test browser-deps bench fmt lint schema clean-data

run:
	$(CARGO) run --release -p triad-api --bin triad -- serve --demo

# services.sh prints `export TRIAD_TEST_DATABASE_URL=...`; eval it in the same
# shell line so that cargo sees it.
test: browser-deps
	eval "$$(scripts/services.sh)" && $(CARGO) test --workspace -- --test-threads=$(TEST_THREADS)

# playwright-core for the web console's browser tests (tests/tests/console.rs). Without
# node or the package those tests skip with a loud message, so a failure only warns.
browser-deps:
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error \
			|| echo "WARNING: npm ci in tests/browser failed: the browser tests will be skipped" >&2; \
	else \
		echo "WARNING: no npm: the web console's browser tests will be skipped" >&2; \
	fi

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
