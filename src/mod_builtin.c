/* mod_builtin: adds msgd's own command modules, in order. */
#include "mod_builtin.h"

#include "module_host.h"

int mod_builtin_add(char *err, size_t errlen)
{
    static const struct msgd_module *const builtin[] = {&mod_core, &mod_pubsub, &mod_direct};
    for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++) {
        int rc = module_add(builtin[i], true, err, errlen);
        if (rc < 0)
            return rc;
    }
    return 0;
}
