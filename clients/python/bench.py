#!/usr/bin/env python3
"""How many requests per second one Python process drives through the msgd
package, with and without pipelining, blocking and asyncio.

    python3 clients/python/bench.py [--host H] [--port P] [-n REQUESTS]
                                    [--depth D] [--payload BYTES] [--json]

Modes (each sends -n PINGs of --payload bytes and checks every reply):
  sync-call       Client.ping() one at a time (a round trip each)
  sync-pipeline   Client.pipeline() batches of --depth requests
  async-call      one task awaiting AsyncClient.ping() one at a time
  async-gather    --depth concurrent tasks' calls in flight at once
  async-pipeline  AsyncClient.pipeline() batches of --depth requests
Every mode is bounded by its request count; nothing runs open-ended.
"""

import argparse
import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import msgd  # noqa: E402


def bench_sync_call(args, payload):
    with msgd.Client(args.host, args.port) as c:
        n = args.requests // 10          # a round trip each: fewer of them
        t0 = time.perf_counter()
        for _ in range(n):
            if c.ping(payload) != payload:
                raise SystemExit("bad reply")
        return n, time.perf_counter() - t0


def bench_sync_pipeline(args, payload):
    with msgd.Client(args.host, args.port) as c:
        done = 0
        t0 = time.perf_counter()
        while done < args.requests:
            k = min(args.depth, args.requests - done)
            pipe = c.pipeline()
            for _ in range(k):
                pipe.ping(payload)
            res = pipe.execute()
            if len(res) != k or res[-1] != payload:
                raise SystemExit("bad reply")
            done += k
        return done, time.perf_counter() - t0


async def bench_async_call(args, payload):
    async with msgd.AsyncClient(args.host, args.port) as c:
        n = args.requests // 10
        t0 = time.perf_counter()
        for _ in range(n):
            if await c.ping(payload) != payload:
                raise SystemExit("bad reply")
        return n, time.perf_counter() - t0


async def bench_async_gather(args, payload):
    async with msgd.AsyncClient(args.host, args.port) as c:
        done = 0
        t0 = time.perf_counter()
        while done < args.requests:
            k = min(args.depth, args.requests - done)
            res = await asyncio.gather(*[c.ping(payload) for _ in range(k)])
            if len(res) != k or res[-1] != payload:
                raise SystemExit("bad reply")
            done += k
        return done, time.perf_counter() - t0


async def bench_async_pipeline(args, payload):
    async with msgd.AsyncClient(args.host, args.port) as c:
        done = 0
        t0 = time.perf_counter()
        while done < args.requests:
            k = min(args.depth, args.requests - done)
            pipe = c.pipeline()
            for _ in range(k):
                pipe.ping(payload)
            res = await pipe.execute()
            if len(res) != k or res[-1] != payload:
                raise SystemExit("bad reply")
            done += k
        return done, time.perf_counter() - t0


MODES = {
    "sync-call": lambda a, p: bench_sync_call(a, p),
    "sync-pipeline": lambda a, p: bench_sync_pipeline(a, p),
    "async-call": lambda a, p: asyncio.run(bench_async_call(a, p)),
    "async-gather": lambda a, p: asyncio.run(bench_async_gather(a, p)),
    "async-pipeline": lambda a, p: asyncio.run(bench_async_pipeline(a, p)),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7700)
    ap.add_argument("-n", "--requests", type=int, default=200000)
    ap.add_argument("--depth", type=int, default=1000, help="requests in flight")
    ap.add_argument("--payload", type=int, default=16, help="PING payload bytes (<= 1024)")
    ap.add_argument("--mode", action="append", choices=sorted(MODES),
                    help="run only these modes (repeatable)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not 0 <= args.payload <= 1024 or args.requests < 10 or args.depth < 1:
        ap.error("want 0 <= --payload <= 1024, -n >= 10, --depth >= 1")
    payload = b"x" * args.payload
    out = {}
    for name in args.mode or list(MODES):
        n, secs = MODES[name](args, payload)
        out[name] = {"requests": n, "seconds": round(secs, 3), "rps": int(n / secs)}
        if not args.json:
            print("%-15s %8d requests %7.2fs %9d req/s" % (name, n, secs, n / secs))
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "depth": args.depth,
                          "payload": args.payload, "modes": out}))


if __name__ == "__main__":
    main()
