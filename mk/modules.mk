# mk/modules.mk: the example modules (examples/modules/NAME/NAME.c), each
# built as $(BUILD)/modules/NAME.so for [modules] load. Included by the main
# Makefile after .DEFAULT_GOAL := all, so nothing here becomes the default
# goal.
#
# A module is compiled like msgd itself ($(ALL_CFLAGS): the same warnings,
# and the same sanitizers in an ASan or TSan build, so the module is
# instrumented too) plus -fPIC -shared. It is not linked against anything of
# msgd's: the msgd_* calls are left undefined and bound to the msgd
# executable when it loads the module (so no -Wl,--no-undefined). The .so
# files are not installed into bin, hence not in EXTRA_BINS.

MODULE_NAMES := presence
MODULE_SOS := $(patsubst %,$(BUILD)/modules/%.so,$(MODULE_NAMES))

all: $(MODULE_SOS)

# One rule per module: NAME.so from examples/modules/NAME/NAME.c.
define module_rule
$$(BUILD)/modules/$(1).so: examples/modules/$(1)/$(1).c src/module.h
	@echo "  CC+LD   $$@"
	@mkdir -p $$(@D)
	$$(Q)$$(CC) $$(ALL_CFLAGS) -fPIC -shared -o $$@ $$< $$(ALL_LDFLAGS)
endef
$(foreach m,$(MODULE_NAMES),$(eval $(call module_rule,$(m))))

-include $(MODULE_SOS:.so=.d)
