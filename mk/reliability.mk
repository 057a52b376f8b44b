# mk/reliability.mk: the long reliability runs of issue 6 (docs/RELIABILITY.md).
# Included by the main Makefile after .DEFAULT_GOAL := all, so nothing here
# becomes the default goal; `make test` runs neither target (it runs the short
# soak, tests/integration/test_soak_short.py, with the integration suite).
#
#   make soak [SOAK_SECONDS=600]   tests/soak/soak.py against $(BUILD)/msgd: 50
#                                  connections of self-checking ECHO traffic;
#                                  fails on any lost, duplicated, corrupted or
#                                  reordered reply, RSS drift > 10% or fd drift
#   make valgrind                  the integration suite with every msgd under
#                                  valgrind memcheck (tests/valgrind/msgd-valgrind.sh);
#                                  fails on any test failure, memcheck error or
#                                  definite leak. Logs: $(BUILD)/valgrind/logs/msgd.PID.log

SOAK_SECONDS ?= 600
VALGRIND_SCALE ?= 10
VALGRIND_DIR = $(BUILD)/valgrind
# The integration modules run under valgrind (all of them by default). The
# harness takes the daemon from MSGD_BIN; the tests also look beside it for
# msgcli and msgbench (test_client) and build into its directory with
# `make BUILD=...` (test_systemd's install tests), so MSGD_BIN is a link to
# the wrapper in $(VALGRIND_DIR)/bin, next to copies of the client tools and
# a link to the modules (harness.module_path).
VALGRIND_EXCLUDE ?=
VALGRIND_TESTS ?= $(filter-out $(VALGRIND_EXCLUDE),\
                    $(patsubst tests/integration/%.py,%,$(sort $(wildcard tests/integration/test_*.py))))

.PHONY: soak valgrind

soak: $(BUILD)/msgd
	@$(SAN_ENV) MSGD_BIN=$(BUILD)/msgd MSGD_TEST_TIMEOUT_SCALE=$(TIMEOUT_SCALE) \
	  SOAK_SECONDS=$(SOAK_SECONDS) python3 tests/soak/soak.py

valgrind: all
	@if [ -n "$(SAN)" ]; then echo "make valgrind: use a build without SAN (valgrind and ASan do not mix)"; exit 2; fi
	@bash scripts/deps.sh valgrind
	@rm -rf $(VALGRIND_DIR) && mkdir -p $(VALGRIND_DIR)/bin $(VALGRIND_DIR)/logs
	@ln -s $(abspath tests/valgrind/msgd-valgrind.sh) $(VALGRIND_DIR)/bin/msgd-valgrind
	@cp $(BUILD)/msgcli $(BUILD)/msgbench $(VALGRIND_DIR)/bin/
	@ln -s $(abspath $(BUILD)/modules) $(VALGRIND_DIR)/bin/modules
	@echo "valgrind: running $(words $(VALGRIND_TESTS)) modules$(if $(strip $(VALGRIND_EXCLUDE)), (excluded: $(VALGRIND_EXCLUDE)),); logs in $(VALGRIND_DIR)/logs"
	@status=0; \
	MSGD_VALGRIND_BIN=$(abspath $(BUILD)/msgd) MSGD_VALGRIND_LOGDIR=$(abspath $(VALGRIND_DIR)/logs) \
	  MSGD_BIN=$(abspath $(VALGRIND_DIR)/bin/msgd-valgrind) MSGD_TEST_TIMEOUT_SCALE=$(VALGRIND_SCALE) \
	  python3 tests/integration/run.py $(VALGRIND_TESTS) || status=1; \
	n=0; clean=0; killed=0; bad=0; \
	for f in $(VALGRIND_DIR)/logs/msgd.*.log; do \
	  [ -e "$$f" ] || continue; n=$$((n + 1)); \
	  if grep -qE 'Invalid (read|write|free)|uninitialised|Mismatched free|overlap|definitely lost: [1-9]|Syscall param' "$$f"; then \
	    bad=$$((bad + 1)); echo "valgrind: errors in $$f:"; \
	    grep -E 'Command:|ERROR SUMMARY|definitely lost|Invalid|uninitialised|Mismatched|overlap|Syscall param' "$$f" | head -20; \
	  elif grep -q 'ERROR SUMMARY: 0 errors' "$$f"; then clean=$$((clean + 1)); \
	  elif grep -q 'ERROR SUMMARY:' "$$f"; then \
	    bad=$$((bad + 1)); echo "valgrind: errors in $$f:"; grep -E 'Command:|ERROR SUMMARY' "$$f"; \
	  else killed=$$((killed + 1)); fi; \
	done; \
	echo "valgrind: $$n msgd processes: $$clean with 'ERROR SUMMARY: 0 errors' and no definite leak, $$bad with errors, $$killed ended without a summary (killed by a test; no error reported before)"; \
	[ $$n -gt 0 ] || { echo "valgrind: no log written"; status=1; }; \
	[ $$bad -eq 0 ] || status=1; \
	exit $$status
