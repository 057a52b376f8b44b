# mk/bench.mk: `make bench`, `make bench-idle`, `make bench-tls`, `make bench-compress`,
# `make bench-cluster`, `make bench-fanout` and `make bench-profile`
# (scripts/bench.sh, scripts/bench/, docs/BENCHMARKS.md). Included by the main Makefile, which sets
# .DEFAULT_GOAL := all first, so nothing here becomes the default goal.
#
# The benchmark builds its own copy of the normal release build (-O2, no
# sanitizers) in $(BENCH_BUILD), so suites rebuilding build/ meanwhile do not
# swap the binaries under it. Knobs (environment or command line):
# BENCH_RUNS, BENCH_SECONDS, BENCH_MODES, BENCH_RATE, BENCH_IDLE_CONNS,
# BENCH_DOC, BENCH_ONLY (see scripts/bench.sh); the cluster step also reads
# BENCH_CLUSTER_SUBS, _PUBS, _RATE, _WINDOW, _SIZE (see scripts/bench/cluster.py); the
# fan-out step BENCH_FANOUT_RUNS, _SECONDS, _WARMUP, _SCENARIOS, _REACTORS, _RATE (see
# scripts/bench/fanout.py).

BENCH_BUILD ?= build-bench

.PHONY: bench bench-idle bench-profile bench-build bench-clean bench-tls bench-compress \
  bench-cluster bench-fanout

bench-build:
	@bash scripts/deps.sh bench
	$(MAKE) all BUILD=$(BENCH_BUILD) SAN=
	$(MAKE) $(BENCH_BUILD)/echo_ref $(BENCH_BUILD)/pingpong_min $(BENCH_BUILD)/tls_bench \
	  $(BENCH_BUILD)/codec_cost

# The smallest echo server, the 16 KiB ping-pong's second reference, and the
# cheapest ping-pong client (for judging what msgbench costs; see BENCHMARKS.md).
$(BENCH_BUILD)/echo_ref $(BENCH_BUILD)/pingpong_min: $(BENCH_BUILD)/%: scripts/bench/%.c
	$(CC) -O2 -g -Wall -Wextra -Werror -o $@ $< -pthread

# What src/codec.c costs per payload size and codec, in process.
$(BENCH_BUILD)/codec_cost: scripts/bench/codec_cost.c src/codec.c src/buffer.c src/codec.h src/buffer.h
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Isrc -o $@ scripts/bench/codec_cost.c \
	  src/codec.c src/buffer.c $(shell pkg-config --libs libzstd zlib 2>/dev/null || echo -lzstd -lz)

# The TLS rows' client (scripts/bench/tls.sh): msgd's TLS against HAProxy's.
$(BENCH_BUILD)/tls_bench: scripts/bench/tls_bench.c src/client/msgclient_tls.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -Isrc -o $@ $^ -pthread \
	  $(shell pkg-config --libs openssl 2>/dev/null)

bench: bench-build
	bash scripts/bench.sh $(BENCH_BUILD)
	bash scripts/bench/tls.sh $(BENCH_BUILD)
	python3 scripts/bench/cluster.py --build $(BENCH_BUILD)
	python3 scripts/bench/fanout.py --build $(BENCH_BUILD)

# Only the fan-out rows: msgd pub/sub against redis-server pub/sub, scenarios A-D,
# the same client (msgfanout, built by `all`) for both.
bench-fanout: bench-build
	python3 scripts/bench/fanout.py --build $(BENCH_BUILD)

# Only the cluster rows: cross-node delivery through Redis against single-node
# delivery and redis-benchmark's PUBLISH rate on the same Redis.
bench-cluster: bench-build
	python3 scripts/bench/cluster.py --build $(BENCH_BUILD)

# Only the TLS rows.
bench-tls: bench-build
	bash scripts/bench/tls.sh $(BENCH_BUILD)

# Only the compression rows (64 KiB text ECHO plain / zstd / deflate, codec cost).
bench-compress: bench-build
	BENCH_ONLY=compress bash scripts/bench.sh $(BENCH_BUILD)

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
