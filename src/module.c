/* module: adding modules (built-in and loaded alike) and their commands,
 * per-connection module data, the accessors of a msgd_conn, and the logging
 * and value-parsing calls of module.h. */
#include "module_host.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "pipeline.h"
#include "proto_msg.h"

static const struct msgd_module *registering; /* whose init runs now: main thread */
static bool registering_builtin;

static struct pipeline *pl_of(const msgd_conn *c) { return proto_msg_pl(c); }

/* A module name: 1..63 of [a-z0-9_], as a config section can be written. */
static bool name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
              name[i] == '_'))
            return false;
    return true;
}

int module_add(const struct msgd_module *m, bool builtin, char *err, size_t errlen)
{
    if (m->api_version != MSGD_MODULE_API_VERSION) {
        snprintf(err, errlen, "module API version %u, but this msgd has version %u: rebuild it",
                 m->api_version, MSGD_MODULE_API_VERSION);
        return -EPROTO;
    }
    if (!name_ok(m->name)) {
        snprintf(err, errlen, "module name '%s' is not 1..63 of a-z 0-9 _", m->name ? m->name : "");
        return -EINVAL;
    }
    if (module_find(m->name, strlen(m->name))) {
        snprintf(err, errlen, "a module named '%s' is loaded already", m->name);
        return -EEXIST;
    }
    if (cmdtab_nmodules() == CMDTAB_MODULES_MAX) {
        snprintf(err, errlen, "more than %d modules", CMDTAB_MODULES_MAX);
        return -ENOSPC;
    }
    registering = m;
    registering_builtin = builtin;
    int rc = m->init ? m->init(m, err, errlen) : 0;
    registering = NULL;
    if (rc < 0)
        return rc;
    return cmdtab_add_module(m);
}

const struct msgd_module *module_find(const char *name, size_t len)
{
    for (int i = 0; i < cmdtab_nmodules(); i++) {
        const struct msgd_module *m = cmdtab_module(i);
        if (strlen(m->name) == len && memcmp(m->name, name, len) == 0)
            return m;
    }
    return NULL;
}

int module_start_all(char *err, size_t errlen)
{
    for (int i = 0; i < cmdtab_nmodules(); i++) {
        const struct msgd_module *m = cmdtab_module(i);
        char why[200] = "";
        int rc = m->start ? m->start(why, sizeof why) : 0;
        if (rc < 0) {
            snprintf(err, errlen, "module %s: %s", m->name, why[0] ? why : strerror(-rc));
            return rc;
        }
    }
    return 0;
}

void module_fini_all(void)
{
    for (int i = cmdtab_nmodules() - 1; i >= 0; i--)
        if (cmdtab_module(i)->fini)
            cmdtab_module(i)->fini();
}

void module_reset(void)
{
    cmdtab_reset();
    registering = NULL;
}

int msgd_command_register(const struct msgd_module *self, const struct msgd_command *cmd, char *err,
                          size_t errlen)
{
    if (!self || self != registering) {
        snprintf(err, errlen, "commands are registered from the module's init only");
        return -EPERM;
    }
    uint32_t min = registering_builtin ? 1 : MSGD_COMMAND_MIN;
    if (cmd->number < min || cmd->number > MSGD_COMMAND_MAX) {
        snprintf(err, errlen, "command %u: a module's numbers are %u..%u", cmd->number, min,
                 MSGD_COMMAND_MAX);
        return -EINVAL;
    }
    if (!cmd->name || strlen(cmd->name) >= CMDTAB_NAME_MAX || (cmd->flags & ~MSGD_NEEDS_AUTH) ||
        (cmd->check && cmd->where != MSGD_WORKER)) {
        snprintf(err, errlen, "command %u: needs a name of 1..%d bytes, known flags only, "
                 "and a check only for a worker command", cmd->number, CMDTAB_NAME_MAX - 1);
        return -EINVAL;
    }
    struct cmd_def def = {
        .number = cmd->number, .where = cmd->where, .needs_auth = cmd->flags & MSGD_NEEDS_AUTH,
        .handler = cmd->handler, .check = cmd->check, .owner = self,
    };
    memcpy(def.name, cmd->name, strlen(cmd->name) + 1);
    return cmdtab_register(&def, err, errlen);
}

/* ---- per-connection data ---- */

void *msgd_conn_data(const msgd_conn *c, const struct msgd_module *self)
{
    const struct msg_conn *m = proto_msg_peek(pl_of(c));
    for (const struct module_data *d = m ? m->mods : NULL; d; d = d->next)
        if (d->owner == self)
            return d->data;
    return NULL;
}

int msgd_conn_set_data(msgd_conn *c, const struct msgd_module *self, void *data,
                       void (*free_fn)(void *data))
{
    struct pipeline *pl = pl_of(c);
    if (pipeline_env_current() != pl->env || (pl->flags & PIPELINE_GONE))
        return -EPERM;
    struct msg_conn *m = proto_msg_state(pl);
    if (!m)
        return -ENOMEM;
    struct module_data *d = m->mods;
    while (d && d->owner != self)
        d = d->next;
    if (!d) {
        d = calloc(1, sizeof *d);
        if (!d)
            return -ENOMEM;
        d->owner = self;
        d->next = m->mods;
        m->mods = d;
    } else if (d->free_fn && d->data != data) {
        d->free_fn(d->data);
    }
    d->data = data;
    d->free_fn = free_fn;
    return 0;
}

/* ---- accessors ---- */

uint64_t msgd_conn_id(const msgd_conn *c) { return pl_of(c)->conn_id; }

int msgd_conn_reactor(const msgd_conn *c) { return pl_of(c)->env->reactor; }

const char *msgd_conn_identity(const msgd_conn *c, size_t *len)
{
    return proto_msg_identity(pl_of(c), len);
}

static int address(const msgd_conn *c, bool local, char *buf, size_t len)
{
    struct pipeline *pl = pl_of(c);
    if (pl->env->ops && pl->env->ops->address)
        return pl->env->ops->address(pl, local, buf, len);
    return snprintf(buf, len, "-") < (int)len ? 0 : -ENOSPC;
}

int msgd_conn_peer(const msgd_conn *c, char *buf, size_t len) { return address(c, false, buf, len); }

int msgd_conn_listener(const msgd_conn *c, char *buf, size_t len)
{
    return address(c, true, buf, len);
}

int msgd_reactor_index(void)
{
    const struct pipeline_env *env = pipeline_env_current();
    return env ? env->reactor : -1;
}

/* ---- logging and values ---- */

void msgd_log(enum msgd_log_level level, const char *fmt, ...)
{
    enum log_level lv = level <= MSGD_LOG_ERROR ? LOG_ERROR
                      : level == MSGD_LOG_WARN ? LOG_WARN
                      : level == MSGD_LOG_INFO ? LOG_INFO : LOG_DEBUG;
    if (!log_enabled(lv))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_write(lv, "%s", line);
}

int msgd_parse_duration(const char *value, double *seconds)
{
    uint64_t ms;
    if (!value || config_parse_duration_ms(value, &ms) < 0)
        return -EINVAL;
    *seconds = (double)ms / 1000.0;
    return 0;
}

int msgd_parse_size(const char *value, uint64_t *bytes)
{
    return value ? config_parse_size(value, bytes) : -EINVAL;
}

int msgd_parse_bool(const char *value, bool *on) { return value ? config_parse_bool(value, on) : -EINVAL; }
