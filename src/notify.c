/* notify: sd_notify messages to the service manager. */
#include "notify.h"

#include <systemd/sd-daemon.h>
#include <time.h>

void notify_ready(const char *status) { sd_notifyf(0, "READY=1\nSTATUS=%s", status); }

void notify_status(const char *status) { sd_notifyf(0, "STATUS=%s", status); }

void notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
               (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

void notify_reloaded(const char *status) { notify_ready(status); }

void notify_watchdog(void) { sd_notify(0, "WATCHDOG=1"); }

void notify_stopping(void) { sd_notify(0, "STOPPING=1\nSTATUS=stopping"); }

void notify_failed(int errnum, const char *status)
{
    sd_notifyf(0, "ERRNO=%d\nSTATUS=%s", errnum, status);
}
