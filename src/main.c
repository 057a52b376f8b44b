/* main: the command line (CONFIG.md): -c FILE, -t, -V, -h. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acceptor.h"
#include "mod_builtin.h"
#include "module_load.h"
#include "config.h"
#include "log.h"
#include "server.h"
#include "thread.h"
#include "tls.h"
#include "version.h"


#define ERR_TEXT_MAX 8192

static void usage(FILE *f)
{
    fprintf(f,
            "usage: msgd [-c FILE] [-t] [-V] [-h]\n"
            "  -c FILE   configuration file (default " CONFIG_DEFAULT_PATH ")\n"
            "  -t        check the configuration and exit\n"
            "  -V        print the version and exit\n"
            "  -h        print this help and exit\n");
}

int main(int argc, char **argv)
{
    thread_name(pthread_self(), "msgd-main");
    const char *path = CONFIG_DEFAULT_PATH;
    int check_only = 0;
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': check_only = 1; break;
        case 'V': printf("msgd %s\n", MSGD_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "msgd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    struct config cfg;
    char *err = calloc(1, ERR_TEXT_MAX);
    if (!err) {
        log_plain(LOG_ERROR, "msgd: out of memory\n");
        return 1;
    }
    /* Until log_init, what goes to stderr goes through log_plain: under
     * systemd it carries the journal priority (<3> errors, <4> warnings). */
    int problems = config_load(path, &cfg, err, ERR_TEXT_MAX);
    if (problems != 0) {
        log_plain(LOG_ERROR, err);
        free(err);
        return 1;
    }
    /* The commands: msgd's own modules, then the loaded ones (in -t too, so
     * a bad module, key or command number fails the check). */
    problems = mod_builtin_add(err, ERR_TEXT_MAX) < 0 ? 1 : 0;
    if (problems) {
        char line[512];
        snprintf(line, sizeof line, "msgd: the built-in commands: %.400s\n", err);
        log_plain(LOG_ERROR, line);
    } else if ((problems = module_load_all(&cfg, path, err, ERR_TEXT_MAX)) != 0) {
        log_plain(LOG_ERROR, err);
    }
    free(err);
    if (problems) {
        config_free(&cfg);
        return 1;
    }
    char warnings[4096];
    int nwarn = config_warnings(&cfg, path, warnings, sizeof warnings);
    if (check_only && cfg.tls_listen.n > 0) { /* the certificate and key must load */
        char terr[1024];
        struct ssl_ctx_st *tls = tls_ctx_new(&cfg, path, terr, sizeof terr);
        if (!tls) {
            char line[1100];
            snprintf(line, sizeof line, "%s\n", terr);
            log_plain(LOG_ERROR, line);
            config_free(&cfg);
            return 1;
        }
        tls_ctx_unref(tls);
    }
    size_t used = strlen(warnings);
    nwarn += acceptor_passed_warnings(&cfg, path, warnings + used, sizeof warnings - used);
    if (check_only) {
        char ok[4200];
        log_plain(LOG_WARN, warnings);
        snprintf(ok, sizeof ok, "%s: ok\n", path);
        log_plain(LOG_INFO, ok);
        config_free(&cfg);
        return 0;
    }
    log_init((enum log_level)cfg.log_level);
    log_info("msgd %s starting with %s", MSGD_VERSION, path);
    for (char *line = nwarn ? strtok(warnings, "\n") : NULL; line; line = strtok(NULL, "\n"))
        log_warn("%s", line);
    for (int i = 0; i < cfg.nmodules; i++)
        log_info("module loaded: %s", cfg.modules[i]);
    int rc = server_run(&cfg, path);
    config_free(&cfg);
    return rc;
}
