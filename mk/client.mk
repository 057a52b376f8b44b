# mk/client.mk: the client side (src/client/): the msgclient library, msgcli,
# msgbench, and the library's unit tests. Included by the main Makefile, which
# sets .DEFAULT_GOAL := all before including this, so the rules below never
# become the default goal.

CLIENT_BASE_OBJS := $(BUILD)/obj/msg.o $(BUILD)/obj/buffer.o
CLIENT_LIB_OBJS := $(BUILD)/obj/client/msgclient.o $(CLIENT_BASE_OBJS)
CLIENT_OBJS := $(BUILD)/obj/client/msgclient.o $(BUILD)/obj/client/msgcli.o \
               $(BUILD)/obj/client/msgbench.o
CLIENT_UNIT_BINS := $(BUILD)/tests/test_msgclient

EXTRA_BINS += $(BUILD)/msgcli $(BUILD)/msgbench
EXTRA_UNIT_BINS += $(CLIENT_UNIT_BINS)

$(BUILD)/obj/client/%.o: src/client/%.c | $(BUILD)/obj/client
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/msgcli: $(BUILD)/obj/client/msgcli.o $(CLIENT_LIB_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^

$(BUILD)/msgbench: $(BUILD)/obj/client/msgbench.o $(CLIENT_BASE_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lev -pthread

$(BUILD)/tests/test_msgclient: tests/unit/client/test_msgclient.c $(CLIENT_LIB_OBJS) | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(CLIENT_LIB_OBJS) $(ALL_LDFLAGS) -pthread

$(BUILD)/obj/client:
	mkdir -p $@

-include $(CLIENT_OBJS:.o=.d) $(CLIENT_UNIT_BINS:=.d)
