# Modules built only for the tests (tests/modules/): the module API's thread
# rules (apitest.so), a module built for another API version, and one that
# claims a command number already taken. `check` and `integration` build them.

TEST_MODULES := $(BUILD)/modules/apitest.so $(BUILD)/modules/apitest_v999.so \
                $(BUILD)/modules/clash.so
TESTMOD_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) -g $(OPT) -fPIC -shared -Isrc $(CFLAGS)

$(BUILD)/modules/apitest.so: tests/modules/apitest.c src/module.h | $(BUILD)/modules
	@echo "  CC      $@"
	$(Q)$(CC) $(TESTMOD_CFLAGS) -o $@ $< -pthread

$(BUILD)/modules/apitest_v999.so: tests/modules/apitest.c src/module.h | $(BUILD)/modules
	@echo "  CC      $@"
	$(Q)$(CC) $(TESTMOD_CFLAGS) -DAPITEST_VERSION=999 -o $@ $< -pthread

$(BUILD)/modules/clash.so: tests/modules/apitest.c src/module.h | $(BUILD)/modules
	@echo "  CC      $@"
	$(Q)$(CC) $(TESTMOD_CFLAGS) -DAPITEST_CLASH -o $@ $< -pthread

$(BUILD)/modules:
	mkdir -p $@

check integration valgrind: $(TEST_MODULES)
