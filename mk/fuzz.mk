# Fuzzing: libFuzzer targets in tests/fuzz/fuzz_<name>.c, built with clang
# (ASan + UBSan + libFuzzer) against the src/ files compiled afresh with the
# same instrumentation (not the gcc objects of $(BUILD)).
#
#   make fuzz-build    build-fuzz/fuzz_<name> for each target
#   make fuzz          run each target FUZZ_SECONDS (600) and report
#                      executions and coverage; fails on any finding
#   make fuzz-smoke    the same with FUZZ_SECONDS defaulting to 60; skipped
#                      (exit 0) when clang is not installed
#   make fuzz-clean    remove build-fuzz
#
# Needs clang and libclang-rt-14-dev (the libFuzzer runtime). Findings go to
# build-fuzz/artifacts/, the growing scratch corpus to build-fuzz/corpus/.

FUZZ_CC ?= clang
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= msg_stream config admin codec http proxy

FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -g -O1 $(FUZZ_SAN) -Isrc \
                   $(shell pkg-config --cflags inih hiredis 2>/dev/null)
FUZZ_LIBS ?= -lev $(shell pkg-config --libs inih libsystemd libzstd zlib hiredis openssl 2>/dev/null) -pthread

# Every src/ file but main.c, in one archive: each target pulls in only the
# objects it needs, so new src/ dependencies are picked up without edits here.
FUZZ_LIB_SRCS := $(filter-out src/main.c,$(wildcard src/*.c))
FUZZ_LIB_OBJS := $(patsubst src/%.c,$(FUZZ_BUILD)/obj/%.o,$(FUZZ_LIB_SRCS))
FUZZ_LIB := $(FUZZ_BUILD)/libmsgd-fuzz.a
FUZZ_BINS := $(addprefix $(FUZZ_BUILD)/fuzz_,$(FUZZ_TARGETS))

.PHONY: fuzz-build fuzz fuzz-smoke fuzz-clean

fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD)/obj/%.o: src/%.c | $(FUZZ_BUILD)/obj
	@echo "  FUZZCC  $@"
	$(Q)$(FUZZ_CC) $(FUZZ_BASE_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

$(FUZZ_LIB): $(FUZZ_LIB_OBJS)
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(FUZZ_LIB)
	@echo "  FUZZLD  $@"
	$(Q)$(FUZZ_CC) $(FUZZ_BASE_CFLAGS) -Wall -Wextra -Itests/fuzz -fsanitize=fuzzer -MMD -MP \
	  -o $@ $< $(FUZZ_LIB) $(FUZZ_LIBS)

$(FUZZ_BUILD)/obj:
	mkdir -p $@

# The seconds for fuzz-smoke: FUZZ_SECONDS when given (command line or
# environment), else 60.
FUZZ_SMOKE_SECONDS = $(if $(filter command line environment environment override,$(origin FUZZ_SECONDS)),$(FUZZ_SECONDS),60)

fuzz: fuzz-build
	@bash tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BUILD) $(FUZZ_TARGETS)

fuzz-smoke:
	@if ! command -v $(FUZZ_CC) >/dev/null 2>&1; then \
	  echo "fuzz-smoke: SKIPPED: $(FUZZ_CC) not installed (needs clang and libclang-rt-14-dev)"; \
	  exit 0; \
	fi; \
	$(MAKE) --no-print-directory fuzz-build FUZZ_CC=$(FUZZ_CC) FUZZ_BUILD=$(FUZZ_BUILD) && \
	bash tests/fuzz/run.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_BUILD) $(FUZZ_TARGETS)

fuzz-clean:
	rm -rf $(FUZZ_BUILD)

-include $(FUZZ_LIB_OBJS:.o=.d) $(FUZZ_BINS:=.d)
