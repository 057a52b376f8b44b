/* test_cmdtab: the command table: registration checks (number range, name,
 * handler, worker function, a number taken twice, the slot limit), lookups
 * of msgd's own and modules' numbers, latency slots and their names, and
 * command words with flag bits. */
#include "cmdtab.h"
#include "test.h"

#include <errno.h>

static int handler(struct pipeline *pl, uint32_t cmd, const uint8_t *p, size_t len)
{
    (void)pl;
    (void)cmd;
    (void)p;
    (void)len;
    return 0;
}

static void work(struct worker_pool *pool, struct worker_job *job)
{
    (void)pool;
    (void)job;
}

static struct cmd_def def(uint32_t number, const char *name, enum cmd_where where)
{
    struct cmd_def d = {.number = number, .where = where, .fn = handler};
    snprintf(d.name, sizeof d.name, "%s", name);
    if (where == CMD_WORKER)
        d.run = work;
    return d;
}

TEST(register_and_find)
{
    char err[256];
    cmdtab_reset();
    CHECK_EQ(cmdtab_slots(), 1);
    struct cmd_def a = def(1, "PING", CMD_INLINE), b = def(5000, "WATCH", CMD_DEFERRED),
                   c = def(1024, "FIRST", CMD_WORKER), d = def(1023, "LAST", CMD_INLINE);
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
    CHECK_EQ(cmdtab_find(1024)->where, CMD_WORKER);
    CHECK(cmdtab_find(1024)->run == work);
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
    struct cmd_def ok = def(7, "OK", CMD_INLINE);
    CHECK_EQ(cmdtab_register(&ok, err, sizeof err), 0);
    struct cmd_def zero = def(0, "ZERO", CMD_INLINE);
    CHECK_EQ(cmdtab_register(&zero, err, sizeof err), -EINVAL);
    struct cmd_def big = def(0x20000000u, "BIG", CMD_INLINE);
    CHECK_EQ(cmdtab_register(&big, err, sizeof err), -EINVAL);
    struct cmd_def noname = def(8, "", CMD_INLINE);
    CHECK_EQ(cmdtab_register(&noname, err, sizeof err), -EINVAL);
    struct cmd_def nofn = def(8, "NOFN", CMD_INLINE);
    nofn.fn = NULL;
    CHECK_EQ(cmdtab_register(&nofn, err, sizeof err), -EINVAL);
    struct cmd_def norun = def(8, "NORUN", CMD_WORKER);
    norun.run = NULL;
    CHECK_EQ(cmdtab_register(&norun, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "worker function") != NULL);
    struct cmd_def longname = def(8, "", CMD_INLINE);
    memset(longname.name, 'N', sizeof longname.name); /* no NUL */
    CHECK_EQ(cmdtab_register(&longname, err, sizeof err), -EINVAL);
    struct cmd_def again = def(7, "AGAIN", CMD_INLINE);
    CHECK_EQ(cmdtab_register(&again, err, sizeof err), -EEXIST);
    CHECK(strstr(err, "taken by OK") != NULL);
    CHECK_EQ(cmdtab_slots(), 2); /* nothing refused took a slot */
}

TEST(register_stops_at_the_slot_limit)
{
    char err[256];
    cmdtab_reset();
    for (uint32_t i = 0; i < CMDTAB_SLOTS - 1; i++) {
        struct cmd_def d = def(2000 + (i * 37) % 500, "", CMD_INLINE);
        snprintf(d.name, sizeof d.name, "C%u", 2000 + (i * 37) % 500);
        CHECK_EQ(cmdtab_register(&d, err, sizeof err), 0);
    }
    struct cmd_def one_more = def(9999, "MORE", CMD_INLINE);
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
