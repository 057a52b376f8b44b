/* cmdtab: the registry of msg commands (and of the modules that own them): a direct array for msgd's own
 * numbers, a sorted array for modules' numbers, and one latency slot each. */
#include "cmdtab.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct cmd_def defs[CMDTAB_SLOTS];          /* by slot; slot 0 unused */
static int nslots = 1;
static int by_number[CMDTAB_BUILTIN_MAX];          /* builtin number -> slot, 0 = none */
static int high[CMDTAB_SLOTS];                     /* slots of numbers >= 1024, sorted */
static int nhigh;
static const struct msgd_module *modules[CMDTAB_MODULES_MAX];
static int nmodules;

static int slot_of(uint32_t number)
{
    if (number < CMDTAB_BUILTIN_MAX)
        return by_number[number];
    int lo = 0, hi = nhigh - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        uint32_t n = defs[high[mid]].number;
        if (n == number)
            return high[mid];
        if (n < number)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return 0;
}

int cmdtab_register(const struct cmd_def *def, char *err, size_t errlen)
{
    size_t nlen = strnlen(def->name, sizeof def->name);
    if (def->number == 0 || def->number > CMDTAB_NUMBER_MAX) {
        snprintf(err, errlen, "command %u: numbers are 1..%u", def->number, CMDTAB_NUMBER_MAX);
        return -EINVAL;
    }
    if (nlen == 0 || nlen == sizeof def->name || !def->handler ||
        (def->where != MSGD_INLINE && def->where != MSGD_WORKER &&
         def->where != MSGD_DEFERRED)) {
        snprintf(err, errlen, "command %u: needs a name (1..%d bytes), a handler and a kind",
                 def->number, CMDTAB_NAME_MAX - 1);
        return -EINVAL;
    }
    int taken = slot_of(def->number);
    if (taken) {
        snprintf(err, errlen, "command %u (%.*s) is taken by %s", def->number, (int)nlen,
                 def->name, defs[taken].name);
        return -EEXIST;
    }
    if (nslots == CMDTAB_SLOTS) {
        snprintf(err, errlen, "command %u (%.*s): more than %d commands", def->number,
                 (int)nlen, def->name, CMDTAB_SLOTS - 1);
        return -ENOSPC;
    }
    int slot = nslots++;
    defs[slot] = *def;
    defs[slot].slot = slot;
    if (def->number < CMDTAB_BUILTIN_MAX) {
        by_number[def->number] = slot;
    } else {
        int i = nhigh++;
        while (i > 0 && defs[high[i - 1]].number > def->number) {
            high[i] = high[i - 1];
            i--;
        }
        high[i] = slot;
    }
    return 0;
}

const struct cmd_def *cmdtab_find(uint32_t command)
{
    if (command > CMDTAB_NUMBER_MAX)
        return NULL;
    int slot = slot_of(command);
    return slot ? &defs[slot] : NULL;
}

int cmdtab_slot(uint32_t command)
{
    return command > CMDTAB_NUMBER_MAX ? 0 : slot_of(command);
}

const char *cmdtab_slot_name(int slot)
{
    return slot > 0 && slot < nslots ? defs[slot].name : "OTHER";
}

int cmdtab_slots(void) { return nslots; }

int cmdtab_add_module(const struct msgd_module *m)
{
    if (nmodules == CMDTAB_MODULES_MAX)
        return -ENOSPC;
    modules[nmodules++] = m;
    return 0;
}

int cmdtab_nmodules(void) { return nmodules; }

const struct msgd_module *cmdtab_module(int i) { return modules[i]; }

void cmdtab_reset(void)
{
    nmodules = 0;
    memset(defs, 0, sizeof defs);
    memset(by_number, 0, sizeof by_number);
    nslots = 1;
    nhigh = 0;
}
