"""Pacing: the client's limiter against the server's own sliding-window limit.

The sample server admits at most ``--limit`` requests in any ``--window`` seconds
and answers 429 beyond that; the client is set to the same limit, with many
workers pushing. Prints, each with its goal:

- the most requests the server saw in any sliding window (≤ the limit) and the
  number of 429s (0);
- the most requests in any tenth of the window (≤ a fifth of the limit): requests
  are spread over the window, not sent in one burst;
- the throughput as a share of the limit (≥ 97%).

    .venv/bin/python benchmarks/bench_pacing.py [--limit 100] [--window 2] [--workers 16] [--users 1000]

Share of the limit: the requests after the first over the first-to-last span, as a
share of ``limit / window``. (A bursting limiter was once measured against the span of
``ceil(N / limit)`` bursts instead; smooth pacing has no bursts to count.)
"""

from __future__ import annotations

import time

from _common import parse_options
from amptools.ratelimit import most_in_window
from amptools.sample import SampleServer


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, limit=100, window=2.0, workers=16, users=1000,
                         latency=(0.0, "seconds per request"))

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
    share = (len(times) - 1) / span / (args.limit / args.window) if span > 0 else 1.0
    peak = most_in_window(times, args.window)
    tenth = most_in_window(times, args.window / 10)
    goals = {
        "window": peak <= args.limit,
        "throttles": throttled == 0,
        "tenth": tenth <= args.limit / 5,
        "share": share >= 0.97,
    }
    met = lambda name: "met" if goals[name] else "NOT MET"  # noqa: E731
    print(f"limit: {args.limit} requests per {args.window:g} s (server and client), "
          f"workers: {args.workers}, users: {len(ids)}, latency: {args.latency * 1000:.0f} ms")
    print(f"result: {result!r} in {elapsed:.2f} s")
    print(f"requests seen by the server: {len(arrivals)}, 429 answers: {throttled} "
          f"(goal 0: {met('throttles')})")
    print(f"most requests in any {args.window:g} s sliding window: {peak} "
          f"(goal ≤ {args.limit}: {met('window')})")
    print(f"most requests in any tenth of it ({args.window / 10:g} s): {tenth} "
          f"(goal ≤ {args.limit / 5:g}, a fifth of the limit: {met('tenth')})")
    print(f"throughput: {len(times) - 1} requests after the first in {span:.2f} s: "
          f"{share:.1%} of the limit (goal ≥ 97%: {met('share')})")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
