# mk/client.mk: the client side (src/client/): the msgclient library, msgcli,
# msgbench, msgfanout, and the library's unit tests. Included by the main Makefile, which
# sets .DEFAULT_GOAL := all before including this, so the rules below never
# become the default goal.

# codec.o (zstd, deflate) is a base-layer file like the others: HELLO's
# compression needs libzstd and zlib at link time (CLIENT_LIBS), TLS OpenSSL.
CLIENT_BASE_OBJS := $(BUILD)/obj/msg.o $(BUILD)/obj/buffer.o $(BUILD)/obj/net.o \
                    $(BUILD)/obj/codec.o
CLIENT_LIB_OBJS := $(BUILD)/obj/client/msgclient.o $(BUILD)/obj/client/msgclient_tls.o \
                   $(CLIENT_BASE_OBJS)
CLIENT_TLS_LIBS = $(shell pkg-config --libs openssl 2>/dev/null)
CLIENT_LIBS = $(shell pkg-config --libs libzstd zlib 2>/dev/null || echo -lzstd -lz) \
              $(CLIENT_TLS_LIBS)
CLIENT_OBJS := $(BUILD)/obj/client/msgclient.o $(BUILD)/obj/client/msgcli.o \
               $(BUILD)/obj/client/msgbench.o $(BUILD)/obj/client/msgfanout.o
CLIENT_UNIT_BINS := $(BUILD)/tests/test_msgclient $(BUILD)/tests/test_msgclient_daemon

EXTRA_BINS += $(BUILD)/msgcli $(BUILD)/msgbench

# msgfanout, the fan-out benchmark's client (scripts/bench/fanout.py), is built
# by `all` (so the tests find it beside msgd, plain and under ASan) but is not
# in EXTRA_BINS: it is a bench tool, not installed, and has no man page.
all: $(BUILD)/msgfanout
EXTRA_UNIT_BINS += $(CLIENT_UNIT_BINS)

$(BUILD)/obj/client/%.o: src/client/%.c | $(BUILD)/obj/client
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/msgcli: $(BUILD)/obj/client/msgcli.o $(CLIENT_LIB_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(CLIENT_LIBS)

$(BUILD)/msgbench: $(BUILD)/obj/client/msgbench.o $(CLIENT_LIB_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ -lev -pthread $(CLIENT_LIBS)

$(BUILD)/msgfanout: $(BUILD)/obj/client/msgfanout.o $(CLIENT_LIB_OBJS)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(CLIENT_LIBS)

$(BUILD)/tests/test_msgclient: tests/unit/client/test_msgclient.c $(CLIENT_LIB_OBJS) | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(CLIENT_LIB_OBJS) $(ALL_LDFLAGS) -pthread $(CLIENT_LIBS)

# The library against the real daemon (tests/unit/client/daemon.c starts
# $(BUILD)/msgd, or MSGD_BIN). connect() is wrapped so the test can see the
# client's reconnect attempts.
CLIENT_TEST_DAEMON_OBJ := $(BUILD)/obj/tests/client_daemon.o

$(CLIENT_TEST_DAEMON_OBJ): tests/unit/client/daemon.c | $(BUILD)/obj/tests
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/tests/test_msgclient_daemon: tests/unit/client/test_msgclient_daemon.c \
		$(CLIENT_TEST_DAEMON_OBJ) $(CLIENT_LIB_OBJS) $(BUILD)/msgd | $(BUILD)/tests
	$(CC) $(ALL_CFLAGS) -Itests/unit -Itests/unit/client -o $@ $< $(CLIENT_TEST_DAEMON_OBJ) \
	  $(CLIENT_LIB_OBJS) $(ALL_LDFLAGS) -Wl,--wrap=connect -pthread $(CLIENT_LIBS)

$(BUILD)/obj/client $(BUILD)/obj/tests:
	mkdir -p $@

-include $(CLIENT_OBJS:.o=.d) $(CLIENT_UNIT_BINS:=.d) $(CLIENT_TEST_DAEMON_OBJ:.o=.d)
