# mk/bench.mk: `make bench`, `make bench-idle` and `make bench-profile`
# (scripts/bench.sh, scripts/bench/, docs/BENCHMARKS.md). Included by the main Makefile, which sets
# .DEFAULT_GOAL := all first, so nothing here becomes the default goal.
#
# The benchmark builds its own copy of the normal release build (-O2, no
# sanitizers) in $(BENCH_BUILD), so suites rebuilding build/ meanwhile do not
# swap the binaries under it. Knobs (environment or command line):
# BENCH_RUNS, BENCH_SECONDS, BENCH_MODES, BENCH_RATE, BENCH_IDLE_CONNS,
# BENCH_DOC (see scripts/bench.sh).

BENCH_BUILD ?= build-bench

.PHONY: bench bench-idle bench-profile bench-build bench-clean bench-tls

bench-build:
	@bash scripts/deps.sh bench
	$(MAKE) all BUILD=$(BENCH_BUILD) SAN=
	$(MAKE) $(BENCH_BUILD)/echo_ref $(BENCH_BUILD)/pingpong_min $(BENCH_BUILD)/tls_bench

# The smallest echo server, the 16 KiB ping-pong's second reference, and the
# cheapest ping-pong client (for judging what msgbench costs; see BENCHMARKS.md).
$(BENCH_BUILD)/echo_ref $(BENCH_BUILD)/pingpong_min: $(BENCH_BUILD)/%: scripts/bench/%.c
	$(CC) -O2 -g -Wall -Wextra -Werror -o $@ $< -pthread

# The TLS rows' client (scripts/bench/tls.sh): msgd's TLS against HAProxy's.
$(BENCH_BUILD)/tls_bench: scripts/bench/tls_bench.c src/client/msgclient_tls.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -Isrc -o $@ $^ -pthread \
	  $(shell pkg-config --libs openssl 2>/dev/null)

bench: bench-build
	bash scripts/bench.sh $(BENCH_BUILD)
	bash scripts/bench/tls.sh $(BENCH_BUILD)

# Only the TLS rows.
bench-tls: bench-build
	bash scripts/bench/tls.sh $(BENCH_BUILD)

bench-idle: bench-build
	bash scripts/bench.sh --idle-only $(BENCH_BUILD)

# Where the time goes in one scenario:
#   make bench-profile BENCH_SCENARIO=pingpong_16k
BENCH_SCENARIO ?= echo_c50
bench-profile: bench-build
	bash scripts/bench/profile.sh $(BENCH_BUILD) $(BENCH_SCENARIO)

bench-clean:
	rm -rf $(BENCH_BUILD)

clean: bench-clean
