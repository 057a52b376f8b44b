/* proto_echo: RFC 862 echo. Any bytes form a whole "frame" that goes back as is. */
#include "proto_echo.h"

static long echo_split_cb(struct pipeline *pl, const uint8_t *p, size_t n)
{
    (void)pl;
    (void)p;
    return (long)n;
}

static void echo_handle_cb(struct pipeline *pl, const uint8_t *frame, size_t len)
{
    pipeline_write(pl, frame, len);
}

static void echo_violation_cb(struct pipeline *pl, long code)
{
    (void)code;
    pipeline_close_after_flush(pl);
}

const struct proto proto_echo = {
    .name = "echo",
    .counted = true,
    .split = echo_split_cb,
    .handle = echo_handle_cb,
    .violation = echo_violation_cb,
};
