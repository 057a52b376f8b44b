/* module_load: the loader of [modules] load: opens each shared object,
 * checks what it exports, hands it the keys of its section, and adds it.
 * The main thread, at start and in `msgd -t`. */
#include "module_load.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "module_host.h"

struct problems {
    const char *path;                  /* the configuration file */
    char *err;
    size_t errlen, used;
    int n;
};

/* Appends "PATH:LINE: message\n" (or "PATH: message\n" for line 0). */
static void report(struct problems *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void report(struct problems *p, int line, const char *fmt, ...)
{
    p->n++;
    if (!p->err || p->used + 1 >= p->errlen)
        return;
    int w = line ? snprintf(p->err + p->used, p->errlen - p->used, "%s:%d: ", p->path, line)
                 : snprintf(p->err + p->used, p->errlen - p->used, "%s: ", p->path);
    if (w > 0 && (size_t)w < p->errlen - p->used)
        p->used += (size_t)w;
    va_list ap;
    va_start(ap, fmt);
    w = vsnprintf(p->err + p->used, p->errlen - p->used, fmt, ap);
    va_end(ap);
    if (w > 0 && (size_t)w < p->errlen - p->used - 1)
        p->used += (size_t)w;
    else
        p->used = p->errlen - 2;
    p->err[p->used++] = '\n';
    p->err[p->used] = '\0';
}

/* Opens one module and checks its header; NULL after reporting. */
static const struct msgd_module *open_one(struct problems *p, const char *cfgpath, const char *name)
{
    char rel[CONFIG_PATH_LEN * 2], full[CONFIG_PATH_LEN * 2 + 2];
    if (config_resolve_path(cfgpath, name, rel, sizeof rel) < 0) {
        report(p, 0, "[modules] load: path too long: %s", name);
        return NULL;
    }
    /* A name without a slash would send dlopen searching the library path;
     * it means a file in the current folder here. */
    snprintf(full, sizeof full, "%s%s", strchr(rel, '/') ? "" : "./", rel);
    dlerror();
    void *h = dlopen(full, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        report(p, 0, "[modules] load: cannot load %s: %s", full, why ? why : "unknown error");
        return NULL;
    }
    const struct msgd_module *m = dlsym(h, "msgd_module");
    if (!m) {
        report(p, 0, "[modules] load: %s is not a msgd module (it exports no msgd_module)", full);
        dlclose(h);
        return NULL;
    }
    if (m->api_version != MSGD_MODULE_API_VERSION) {
        report(p, 0, "[modules] load: %s was built for module API version %u; this msgd has "
               "version %u: rebuild it", full, m->api_version, MSGD_MODULE_API_VERSION);
        dlclose(h);
        return NULL;
    }
    if (m->name && config_section_known(m->name)) {
        report(p, 0, "[modules] load: %s: the module name '%s' is a section of msgd's own",
               full, m->name);
        dlclose(h);
        return NULL;
    }
    return m; /* stays loaded for the life of the process */
}

/* Hands module m every key of its section. */
static void configure(struct problems *p, const struct config *cfg, const struct msgd_module *m)
{
    for (int i = 0; i < cfg->nextras; i++) {
        const struct config_extra *e = &cfg->extras[i];
        if (!e->key[0] || strcmp(e->section, m->name) != 0)
            continue;
        char why[256] = "";
        int rc = m->config ? m->config(e->key, e->value, why, sizeof why) : -ENOENT;
        if (rc == -ENOENT)
            report(p, e->line, "unknown key '%s' in [%s]", e->key, e->section);
        else if (rc < 0)
            report(p, e->line, "bad value '%s' for '%s' in [%s]: %s", e->value, e->key,
                   e->section, why[0] ? why : strerror(-rc));
    }
}

int module_load_all(const struct config *cfg, const char *cfgpath, char *err, size_t errlen)
{
    struct problems p = {.path = cfgpath, .err = err, .errlen = err ? errlen : 0};
    if (err && errlen)
        err[0] = '\0';
    const struct msgd_module *loaded[CONFIG_MAX_MODULES];
    int nloaded = 0;
    for (int i = 0; i < cfg->nmodules; i++) {
        const struct msgd_module *m = open_one(&p, cfgpath, cfg->modules[i]);
        if (!m)
            continue;
        configure(&p, cfg, m);
        char why[256] = "";
        int rc = module_add(m, false, why, sizeof why);
        if (rc < 0) {
            report(&p, 0, "[modules] load: %s: %s", cfg->modules[i],
                   why[0] ? why : strerror(-rc));
            continue;
        }
        loaded[nloaded++] = m;
    }
    for (int i = 0; i < cfg->nextras; i++) {
        const struct config_extra *e = &cfg->extras[i];
        if (e->key[0])
            continue;
        int k = 0;
        while (k < nloaded && strcmp(loaded[k]->name, e->section) != 0)
            k++;
        if (k == nloaded && cfg->nmodules > 0)
            report(&p, e->line, "unknown section [%s] (no loaded module has that name)",
                   e->section);
    }
    return p.n;
}
