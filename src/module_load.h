/* module_load: loads the modules of [modules] load (dlopen), configures each
 * from its own section, and adds it (module_host.h). */
#ifndef MSGD_MODULE_LOAD_H
#define MSGD_MODULE_LOAD_H

#include <stddef.h>

struct config;

/* Loads every module of cfg->modules in order, hands each the keys of its
 * section [NAME] from cfg->extras, runs its init, and reports a section no
 * loaded module owns. Every problem is one line "CFGPATH[:LINE]: what" in
 * err. Returns the number of problems (0: all loaded). The built-in modules
 * must be added first. Main thread, start-up (and msgd -t). */
int module_load_all(const struct config *cfg, const char *cfgpath, char *err, size_t errlen);

#endif
