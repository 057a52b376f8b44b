/* test_cmdtab: the command table: registration checks (number range, name,
 * handler, kind, a number taken twice, the slot limit), lookups
 * of msgd's own and modules' numbers, latency slots and their names, and
 * command words with flag bits. */
#include "cmdtab.h"
#include "test.h"

#include <errno.h>

static void handler(msgd_req *req, const uint8_t *p, size_t len)
{
    (void)req;
    (void)p;
    (void)len;
}

static struct cmd_def def(uint32_t number, const char *name, enum msgd_where where)
{
    struct cmd_def d = {.number = number, .where = where, .handler = handler};
    snprintf(d.name, sizeof d.name, "%s", name);
    return d;
}

TEST(register_and_find)
{
    char err[256];
    cmdtab_reset();
    CHECK_EQ(cmdtab_slots(), 1);
    struct cmd_def a = def(1, "PING", MSGD_INLINE), b = def(5000, "WATCH", MSGD_DEFERRED),
                   c = def(1024, "FIRST", MSGD_WORKER), d = def(1023, "LAST", MSGD_INLINE);
    CHECK_EQ(cmdtab_register(&a, err, sizeof err), 0);
    CHECK_EQ(cmdtab_register(&b, err, sizeof err), 0);
    CHECK_EQ(cmdtab_register(&c, err, sizeof err), 0);
    CHECK_EQ(cmdtab_register(&d, err, sizeof err), 0);
    CHECK_EQ(cmdtab_slots(), 5);
    CHECK_STR(cmdtab_find(1)->name, "PING");
    CHECK_STR(cmdtab_find(5000)->name, "WATCH");
    CHECK_STR(cmdtab_find(1024)->name, "FIRST");
    CHECK_STR(cmdtab_find(1023)->name, "LAST");
    CHECK(cmdtab_find(2) == NULL);
    CHECK(cmdtab_find(4999) == NULL);
    CHECK(cmdtab_find(0) == NULL);
    CHECK_EQ(cmdtab_find(1024)->where, MSGD_WORKER);
    CHECK(cmdtab_find(1024)->handler == handler);
    /* Slots in registration order, named after the command. */
    CHECK_EQ(cmdtab_slot(1), 1);
    CHECK_EQ(cmdtab_slot(5000), 2);
    CHECK_EQ(cmdtab_find(5000)->slot, 2);
    CHECK_EQ(cmdtab_slot(77), 0);
    CHECK_STR(cmdtab_slot_name(0), "OTHER");
    CHECK_STR(cmdtab_slot_name(3), "FIRST");
    CHECK_STR(cmdtab_slot_name(63), "OTHER");
    /* A flag bit makes any word unknown. */
    CHECK(cmdtab_find(0x80000001u) == NULL);
    CHECK(cmdtab_find(0x40000001u) == NULL);
    CHECK(cmdtab_find(0x20000001u) == NULL);
    CHECK_EQ(cmdtab_slot(0x20000001u), 0);
    /* The registry keeps its own copy. */
    a.name[0] = 'X';
    CHECK_STR(cmdtab_find(1)->name, "PING");
}

TEST(register_refuses_bad_definitions)
{
    char err[256];
    cmdtab_reset();
    struct cmd_def ok = def(7, "OK", MSGD_INLINE);
    CHECK_EQ(cmdtab_register(&ok, err, sizeof err), 0);
    struct cmd_def zero = def(0, "ZERO", MSGD_INLINE);
    CHECK_EQ(cmdtab_register(&zero, err, sizeof err), -EINVAL);
    struct cmd_def big = def(0x20000000u, "BIG", MSGD_INLINE);
    CHECK_EQ(cmdtab_register(&big, err, sizeof err), -EINVAL);
    struct cmd_def noname = def(8, "", MSGD_INLINE);
    CHECK_EQ(cmdtab_register(&noname, err, sizeof err), -EINVAL);
    struct cmd_def nofn = def(8, "NOFN", MSGD_INLINE);
    nofn.handler = NULL;
    CHECK_EQ(cmdtab_register(&nofn, err, sizeof err), -EINVAL);
    struct cmd_def nokind = def(8, "NOKIND", MSGD_WORKER);
    nokind.where = (enum msgd_where)7;
    CHECK_EQ(cmdtab_register(&nokind, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "a kind") != NULL);
    struct cmd_def longname = def(8, "", MSGD_INLINE);
    memset(longname.name, 'N', sizeof longname.name); /* no NUL */
    CHECK_EQ(cmdtab_register(&longname, err, sizeof err), -EINVAL);
    struct cmd_def again = def(7, "AGAIN", MSGD_INLINE);
    CHECK_EQ(cmdtab_register(&again, err, sizeof err), -EEXIST);
    CHECK(strstr(err, "taken by OK") != NULL);
    CHECK_EQ(cmdtab_slots(), 2); /* nothing refused took a slot */
}

TEST(register_stops_at_the_slot_limit)
{
    char err[256];
    cmdtab_reset();
    for (uint32_t i = 0; i < CMDTAB_SLOTS - 1; i++) {
        struct cmd_def d = def(2000 + (i * 37) % 500, "", MSGD_INLINE);
        snprintf(d.name, sizeof d.name, "C%u", 2000 + (i * 37) % 500);
        CHECK_EQ(cmdtab_register(&d, err, sizeof err), 0);
    }
    struct cmd_def one_more = def(9999, "MORE", MSGD_INLINE);
    CHECK_EQ(cmdtab_register(&one_more, err, sizeof err), -ENOSPC);
    /* Module numbers registered out of order are all found. */
    for (uint32_t i = 0; i < CMDTAB_SLOTS - 1; i++) {
        uint32_t n = 2000 + (i * 37) % 500;
        CHECK(cmdtab_find(n) != NULL);
        CHECK_EQ(cmdtab_find(n)->number, n);
    }
    CHECK(cmdtab_find(2001) == NULL || cmdtab_find(2001)->number == 2001);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
