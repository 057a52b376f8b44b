# msgd: `make` builds build/msgd and the client tools; `make test` installs
# what is missing, builds, and runs the unit and integration suites, plain and
# under ASan+UBSan, then each libFuzzer target for 60 s (mk/fuzz.mk).

PREFIX ?= /usr/local
MSGD_VERSION := $(shell sed -n 's/^\#define MSGD_VERSION "\(.*\)"/\1/p' src/version.h)
DESTDIR ?=
SYSCONFDIR ?= /etc
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
# The systemd system unit directory, as systemd's pkg-config file says
# (CONFIG.md "Files installed"); UNITDIR=... still overrides it.
UNITDIR ?= $(or $(shell pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null),/lib/systemd/system)
MANPAGES := man/msgd.8 man/msgd.ini.5 man/msgcli.1 man/msgbench.1

CC ?= cc
BUILD ?= build
V ?= 0
Q := $(if $(filter 1,$(V)),,@)   # make V=1 shows the full commands
SAN ?=

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wpointer-arith -Wwrite-strings -Wformat=2 -Wvla -Wundef -Wcast-qual \
        -Wnull-dereference -Wimplicit-fallthrough
OPT := -O2
ifeq ($(SAN),asan)
  OPT := -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
endif
ifeq ($(SAN),tsan)
  OPT := -O1 -fsanitize=thread -fno-omit-frame-pointer
endif

PKG_CFLAGS = $(shell pkg-config --cflags inih libsystemd libzstd zlib hiredis 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs inih libsystemd libzstd zlib hiredis 2>/dev/null)
CFLAGS ?=
LDFLAGS ?=
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) -g $(OPT) -MMD -MP -Isrc $(PKG_CFLAGS) $(CFLAGS)
ALL_LDFLAGS = $(OPT) $(LDFLAGS)
LIBS = -lev $(PKG_LIBS) -pthread

SRCS := $(wildcard src/*.c)
OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRCS))
LIB_OBJS := $(filter-out $(BUILD)/obj/main.o,$(OBJS))
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRCS))

TIMEOUT_SCALE_asan := 3
TIMEOUT_SCALE_tsan := 6
TIMEOUT_SCALE := $(or $(TIMEOUT_SCALE_$(SAN)),1)
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
           UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
           TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp

.PHONY: all run test tsan check unit integration deps install uninstall clean
.DEFAULT_GOAL := all

# TLS (src/tls.c, tls_listen) is OpenSSL 3.
PKG_CFLAGS += $(shell pkg-config --cflags openssl 2>/dev/null)
PKG_LIBS += $(shell pkg-config --libs openssl 2>/dev/null)

# Further parts of the build (client tools, fuzzing, benchmarks) live in
# mk/*.mk. Each may add to these:
EXTRA_BINS :=        # built by `all` and installed to $(PREFIX)/bin
EXTRA_UNIT_BINS :=   # more unit-test binaries, run with the others
include $(sort $(wildcard mk/*.mk))

all: $(BUILD)/msgd $(EXTRA_BINS)

# msgd exports module.h's calls (msgd_*) to the modules it loads.
$(BUILD)/msgd: $(OBJS) src/module.syms
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -Wl,--dynamic-list=src/module.syms -o $@ $(OBJS) $(LIBS)

# The default -c is $(SYSCONFDIR)/msgd/msgd.ini, like the unit's and the
# install's: main.o is rebuilt whenever SYSCONFDIR changes.
$(BUILD)/obj/main.o: ALL_CFLAGS += -DMSGD_SYSCONFDIR='"$(SYSCONFDIR)"'
$(BUILD)/obj/main.o: $(BUILD)/sysconfdir
$(BUILD)/sysconfdir: FORCE | $(BUILD)/obj
	@echo '$(SYSCONFDIR)' | cmp -s - $@ || echo '$(SYSCONFDIR)' > $@
.PHONY: FORCE
FORCE:

$(BUILD)/obj/%.o: src/%.c | $(BUILD)/obj
	@echo "  CC      $@"
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJS) | $(BUILD)/tests
	@echo "  CC+LD   $@"
	$(Q)$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(LIB_OBJS) $(ALL_LDFLAGS) $(LIBS)

$(BUILD)/obj $(BUILD)/tests:
	mkdir -p $@

deps:
	@bash scripts/deps.sh

# Running needs only the build and run group (no clang, no test tools).
run:
	@bash scripts/deps.sh run
	$(MAKE) all
	./$(BUILD)/msgd -c conf/msgd.ini

# The suites on one build (BUILD/SAN select it). Results go to BUILD/results.
check: all $(UNIT_BINS) $(EXTRA_UNIT_BINS)
	@rm -f $(BUILD)/results
	@$(SAN_ENV) bash tests/unit/run.sh $(BUILD)/results $(UNIT_BINS) $(EXTRA_UNIT_BINS)
	@$(SAN_ENV) MSGD_BIN=$(BUILD)/msgd MSGD_TEST_TIMEOUT_SCALE=$(TIMEOUT_SCALE) \
	  MSGD_RESULTS=$(BUILD)/results python3 tests/integration/run.py

unit: $(UNIT_BINS) $(EXTRA_UNIT_BINS)
	@$(SAN_ENV) bash tests/unit/run.sh $(BUILD)/results $(UNIT_BINS) $(EXTRA_UNIT_BINS)

integration: all
	@$(SAN_ENV) MSGD_BIN=$(BUILD)/msgd MSGD_TEST_TIMEOUT_SCALE=$(TIMEOUT_SCALE) \
	  python3 tests/integration/run.py

test: deps
	$(MAKE) check BUILD=build
	$(MAKE) check BUILD=build-asan SAN=asan
	$(MAKE) fuzz-smoke
	@echo "fuzz $(words $(FUZZ_TARGETS)) 0" > build-fuzz/results
	@bash tests/total.sh build/results build-asan/results build-fuzz/results

tsan: deps
	$(MAKE) check BUILD=build-tsan SAN=tsan CC=gcc
	@bash tests/total.sh build-tsan/results

# CONFIG.md "Files installed". PREFIX, DESTDIR, SYSCONFDIR, UNITDIR (and
# BINDIR, SBINDIR, MANDIR) may be set on the command line.
install: all
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR)
	install -m 0755 $(BUILD)/msgd $(DESTDIR)$(SBINDIR)/msgd
	install -m 0755 $(EXTRA_BINS) $(DESTDIR)$(BINDIR)/
	install -d $(DESTDIR)$(SYSCONFDIR)/msgd
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/msgd/msgd.ini ]; then \
	  echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/msgd/msgd.ini"; \
	else install -m 0644 conf/msgd.ini $(DESTDIR)$(SYSCONFDIR)/msgd/msgd.ini; fi
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	  systemd/msgd.service.in > $(DESTDIR)$(UNITDIR)/msgd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/msgd.service
	install -m 0644 systemd/msgd.socket $(DESTDIR)$(UNITDIR)/msgd.socket
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	@for m in $(MANPAGES); do \
	  sec=$${m##*.}; \
	  sed -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@VERSION@|$(MSGD_VERSION)|g' $$m \
	    > $(DESTDIR)$(MANDIR)/man$$sec/$${m#man/} && \
	  chmod 0644 $(DESTDIR)$(MANDIR)/man$$sec/$${m#man/} || exit 1; \
	done
	install -d $(DESTDIR)$(PREFIX)/include/msgd $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 0644 src/module.h $(DESTDIR)$(PREFIX)/include/msgd/module.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(MSGD_VERSION)|g' conf/msgd.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/msgd.pc
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/pkgconfig/msgd.pc

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/msgd $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(EXTRA_BINS)))
	rm -f $(DESTDIR)$(UNITDIR)/msgd.service $(DESTDIR)$(UNITDIR)/msgd.socket
	rm -f $(foreach m,$(MANPAGES),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m)))
	rm -f $(DESTDIR)$(PREFIX)/include/msgd/module.h $(DESTDIR)$(PREFIX)/lib/pkgconfig/msgd.pc
	-rmdir $(DESTDIR)$(PREFIX)/include/msgd 2>/dev/null
	@echo "left $(DESTDIR)$(SYSCONFDIR)/msgd/msgd.ini in place (remove it by hand if unwanted)"

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(OBJS:.o=.d) $(UNIT_BINS:=.d) $(EXTRA_UNIT_BINS:=.d)
