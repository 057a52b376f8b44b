/* mod_hello: HELLO (6), registered through module.h: the client and the
 * server agree on optional features (PROTOCOL.md "HELLO"), today the codec
 * of compressed payloads. At most once per connection, before AUTH or after. */
#include "mod_builtin.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "backplane.h"
#include "codec.h"
#include "config.h"
#include "msg.h"
#include "pipeline.h"
#include "proto_msg.h"
#include "version.h"

#define HELLO_REPLY_MAX 1024

/* The value of key in HELLO's key=value lines, or NULL (*len its length).
 * Lines without '=' are skipped; a key given twice counts the first time. */
static const char *find_key(const uint8_t *p, size_t len, const char *key, size_t *vlen)
{
    size_t klen = strlen(key), i = 0;
    while (i < len) {
        const uint8_t *nl = memchr(p + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - p) : len;
        size_t line = end - i;
        if (line > klen && p[i + klen] == '=' && memcmp(p + i, key, klen) == 0) {
            *vlen = line - klen - 1;
            if (*vlen && p[i + klen + *vlen] == '\r') /* tolerate \r\n */
                (*vlen)--;
            return (const char *)p + i + klen + 1;
        }
        i = end + 1;
    }
    return NULL;
}

/* Appends "key=value\n" to out (its room checked by the caller's size). */
static size_t put(char *out, size_t at, size_t cap, const char *key, const char *value)
{
    int n = snprintf(out + at, cap - at, "%s=%s\n", key, value);
    return n < 0 || (size_t)n >= cap - at ? cap - 1 : at + (size_t)n;
}

/* HELLO: picks the first codec of the client's list that the server has
 * enabled, and tells the client what it may use. Reactor thread. */
static void cmd_hello(msgd_req *req, const uint8_t *p, size_t len)
{
    struct pipeline *pl = proto_msg_req_pipeline(req);
    struct msg_conn *m = proto_msg_state(pl);
    if (!m) {
        pl->flags |= PIPELINE_FAILED;
        return;
    }
    if (m->helloed) {
        msgd_error(req, MSG_ERR_BAD_PAYLOAD, "HELLO was sent already on this connection");
        return;
    }
    const struct config *cfg = pl->env->cfg;
    struct codec_list want = {0};
    size_t vlen;
    const char *v = find_key(p, len, "compress", &vlen);
    if (v)
        codec_parse_list(v, vlen, false, &want);
    enum codec_id chosen = pl->env->codec ? codec_choose(&want, &cfg->compress) : CODEC_NONE;

    char out[HELLO_REPLY_MAX], num[32], node[256] = "";
    size_t at = 0, cap = sizeof out;
    at = put(out, at, cap, "server", "msgd/" MSGD_VERSION);
    at = put(out, at, cap, "protocol", "1");
    at = put(out, at, cap, "compress", codec_name(chosen));
    snprintf(num, sizeof num, "%llu", (unsigned long long)cfg->compress_min);
    at = put(out, at, cap, "compress_min", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)cfg->max_frame);
    at = put(out, at, cap, "max_frame", num);
    uint64_t heartbeat_ms, idle_ms; /* this connection's: [msg]'s own, else [timeouts] */
    config_listener_timeouts(cfg, "msg", &heartbeat_ms, &idle_ms);
    snprintf(num, sizeof num, "%llu", (unsigned long long)heartbeat_ms);
    at = put(out, at, cap, "heartbeat_ms", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)idle_ms);
    at = put(out, at, cap, "idle_ms", num);
    if (cfg->cluster_node[0])
        snprintf(node, sizeof node, "%s", cfg->cluster_node);
    else if (gethostname(node, sizeof node - 1) < 0)
        snprintf(node, sizeof node, "-");
    at = put(out, at, cap, "node", node);
    char features[512] = "auth,pubsub,direct";
    if (chosen != CODEC_NONE)
        strcat(features, ",compress");
    if (pl->secure)
        strcat(features, ",tls");
    const struct backplane *bp = pl->env->backplane;
    if (bp && bp->ops->up(bp->ctx))
        strcat(features, ",cluster");
    for (int i = 0; i < cmdtab_nmodules(); i++) {
        const char *name = cmdtab_module(i)->name;
        if (!cmdtab_module_builtin(i) && strlen(features) + 1 + strlen(name) < sizeof features) {
            strcat(features, ",");
            strcat(features, name);
        }
    }
    at = put(out, at, cap, "features", features);

    m->helloed = true;
    /* The reply itself goes out plain; what follows may be compressed. */
    msgd_reply(req, out, at);
    proto_msg_codec_set(pl, chosen);
}

static int hello_init(const struct msgd_module *self, char *err, size_t errlen)
{
    static const struct msgd_command cmd = {MSG_CMD_HELLO, "HELLO", MSGD_INLINE, 0, cmd_hello,
                                            NULL};
    return msgd_command_register(self, &cmd, err, errlen);
}

const struct msgd_module mod_hello = {
    .api_version = MSGD_MODULE_API_VERSION,
    .name = "hello",
    .init = hello_init,
};
