/* Unit tests for conntab: ids, generations, reuse, growth. */
#include "conntab.h"
#include "test.h"

/* Any distinct addresses do as connections: the table never dereferences them. */
static char conns[300];
#define C(i) ((struct conn *)&conns[i])

TEST(reserve_set_get_release)
{
    struct conntab t;
    conntab_init(&t, 7);
    int err = 0;
    uint64_t id = conntab_reserve(&t, &err);
    CHECK_EQ(err, 0);
    CHECK(id != 0);
    CHECK_EQ(CONN_ID_REACTOR(id), 7);
    CHECK(conntab_get(&t, id) == NULL); /* reserved, not yet set */
    conntab_set(&t, id, C(0));
    CHECK(conntab_get(&t, id) == C(0));
    CHECK_EQ(t.count, 1);
    conntab_release(&t, id);
    CHECK(conntab_get(&t, id) == NULL);
    CHECK_EQ(t.count, 0);
    conntab_free(&t);
}

TEST(reused_slot_gets_a_new_generation)
{
    struct conntab t;
    conntab_init(&t, 0);
    int err = 0;
    uint64_t a = conntab_reserve(&t, &err);
    conntab_set(&t, a, C(1));
    conntab_release(&t, a);
    uint64_t b = conntab_reserve(&t, &err);
    conntab_set(&t, b, C(2));
    CHECK_EQ(CONN_ID_SLOT(a), CONN_ID_SLOT(b)); /* the same slot, reused */
    CHECK(a != b);
    CHECK(conntab_get(&t, a) == NULL);          /* the old name finds nothing */
    CHECK(conntab_get(&t, b) == C(2));
    conntab_free(&t);
}

TEST(other_reactor_and_out_of_range_ids_find_nothing)
{
    struct conntab t;
    conntab_init(&t, 1);
    int err = 0;
    uint64_t id = conntab_reserve(&t, &err);
    conntab_set(&t, id, C(3));
    CHECK(conntab_get(&t, CONN_ID(2, CONN_ID_SLOT(id), CONN_ID_GEN(id))) == NULL);
    CHECK(conntab_get(&t, CONN_ID(1, 100000, 1)) == NULL);
    conntab_free(&t);
}

TEST(grows_and_walks)
{
    struct conntab t;
    conntab_init(&t, 3);
    uint64_t ids[300];
    int err = 0;
    for (int i = 0; i < 300; i++) {
        ids[i] = conntab_reserve(&t, &err);
        CHECK_EQ(err, 0);
        conntab_set(&t, ids[i], C(i));
    }
    CHECK_EQ(t.count, 300);
    for (int i = 0; i < 300; i++)
        CHECK(conntab_get(&t, ids[i]) == C(i));
    int seen = 0;
    for (uint32_t i = 0; i < t.nslots; i++)
        if (conntab_at(&t, i)) {
            conntab_release(&t, CONN_ID(3, i, t.slots[i].gen)); /* closing while walking */
            seen++;
        }
    CHECK_EQ(seen, 300);
    CHECK_EQ(t.count, 0);
    conntab_free(&t);
}

int main(int argc, char **argv) { return test_main(argc, argv); }
