"""Throughput: get_profiles with workers versus a plain sequential requests loop.

Both fetch the same users from the embedded sample org with a fixed latency per
request and every rate limit raised out of the way, in the same run. With W
workers the ratio should be close to W: the work is waiting, and the limiter,
the parsing and the per-id bookkeeping must not get in its way.

    .venv/bin/python benchmarks/bench_throughput.py [--users 1000] [--latency 0.1] [--workers 8]
"""

from __future__ import annotations

import time

import requests

from _common import parse_options
from amptools.sample import SampleServer


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, users=1000, latency=(0.1, "seconds per request"), workers=8)

    with SampleServer(rate_limit=10**9, window=1.0, latency=args.latency,
                      n_users=max(args.users + 1, 2000)) as server:
        ids = list(server.org.user_ids[1:args.users + 1])

        # Baseline: the loop an analyst would write first.
        session = requests.Session()
        headers = {"Authorization": f"Api-Key {server.secret_key}"}
        started = time.monotonic()
        ok = 0
        for user_id in ids:
            response = session.get(f"{server.url}/v1/userprofile", params={"user_id": user_id},
                                   headers=headers, timeout=30)
            ok += response.status_code == 200
        sequential = time.monotonic() - started

        client = server.client(rate_limit=10**9, rate_period=1.0)
        started = time.monotonic()
        result = client.get_profiles(ids, workers=args.workers, progress=False)
        bulk = time.monotonic() - started

    print(f"users: {len(ids)}, latency per request: {args.latency * 1000:.0f} ms, "
          f"workers: {args.workers}")
    print(f"sequential requests loop: {sequential:8.2f} s  ({ok} ok, {len(ids) / sequential:6.1f} users/s)")
    print(f"get_profiles:             {bulk:8.2f} s  ({result!r}, {len(ids) / bulk:6.1f} users/s)")
    print(f"speed-up: {sequential / bulk:.2f}x (ideal {args.workers}x)")
    return 0 if result.counts["ok"] == len(ids) else 1


if __name__ == "__main__":
    raise SystemExit(main())
