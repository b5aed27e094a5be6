"""Pacing: the client's limiter against the server's own sliding-window limit.

The sample server admits at most ``--limit`` requests in any ``--window`` seconds
and answers 429 beyond that; the client is set to the same limit, with many
workers pushing. Prints the most requests the server saw in any sliding window
(must not exceed the limit), the number of 429s (must be 0) and the throughput
as a share of the limit (aim: 95% or more).

    .venv/bin/python benchmarks/bench_pacing.py [--limit 100] [--window 2] [--workers 16] [--users 1000]

Share of the limit: a perfect limiter sends ``limit`` requests at once and the
next ``limit`` exactly one window later, so ``N`` requests span at best
``(ceil(N / limit) - 1) * window`` seconds from the first arrival to the last.
The share is that ideal span over the measured one. (Our limiter counts a
request until one window after its answer, as the service may count it at any
moment in flight, so each window drifts by the time a burst takes to be answered.)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from amptools.sample import SampleServer  # noqa: E402


def max_in_sliding_window(times: list[float], window: float) -> int:
    """The most arrivals in any half-open window [t, t + window)."""
    times = sorted(times)
    best = start = 0
    for end, moment in enumerate(times):
        while times[start] <= moment - window:
            start += 1
        best = max(best, end - start + 1)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    args = parser.parse_args(argv)

    with SampleServer(rate_limit=args.limit, window=args.window, latency=args.latency,
                      n_users=max(args.users + 1, 2000)) as server:
        ids = list(server.org.user_ids[1:args.users + 1])
        client = server.client(rate_limit=args.limit, rate_period=args.window)
        started = time.monotonic()
        result = client.get_profiles(ids, workers=args.workers, progress=False)
        elapsed = time.monotonic() - started
        arrivals = server.arrivals

    times = [a.time for a in arrivals]
    throttled = sum(a.status == 429 for a in arrivals)
    span = max(times) - min(times)
    ideal = (math.ceil(len(arrivals) / args.limit) - 1) * args.window
    share = ideal / span if span > 0 else 1.0
    peak = max_in_sliding_window(times, args.window)
    print(f"limit: {args.limit} requests per {args.window:g} s (server and client), "
          f"workers: {args.workers}, users: {len(ids)}, latency: {args.latency * 1000:.0f} ms")
    print(f"result: {result!r} in {elapsed:.2f} s")
    print(f"requests seen by the server: {len(arrivals)}, 429 answers: {throttled} (must be 0)")
    print(f"most requests in any {args.window:g} s sliding window: {peak} (limit {args.limit})")
    print(f"throughput: first to last request {span:.2f} s, at best {ideal:.2f} s: "
          f"{share:.1%} of the limit (aim ≥ 95%)")
    return 0 if peak <= args.limit and throttled == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
