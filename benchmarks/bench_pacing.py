"""Pacing alone on a quiet org, at the real 60-second window: slow start, then the ceiling.

The sample server admits at most ``--limit`` requests in any ``--window`` seconds (the
org's 600 a minute); a client with its defaults (``rate_limit`` 540 a minute, 90% of the
org's) fetches with many workers for ``--seconds``. Prints, each with its goal:

- the 429 answers (0) and the most requests the server saw in any window (≤ the limit);
- the most requests in any tenth of the window (≤ a fifth of the limit): spread, not
  bursts;
- when the client's pace reached 97% of its ceiling (goal: within a minute — a run
  starts at a fifth of it, so a campaign already sending barely notices it);
- the requests of the second window against the ceiling (≥ 97%): the baseline is the
  ceiling itself, a client at full pace from its first request.

    .venv/bin/python benchmarks/bench_pacing.py [--limit 600] [--window 60] [--seconds 120] [--workers 16] [--quick]

``--quick`` compresses the time ten times (a 6-second window): for a quick look only.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

from _common import parse_options
from amptools.ratelimit import most_in_window
from amptools.sample import SampleServer


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, limit=600, window=60.0, seconds=120.0, workers=16,
                         quick=(0, "1: compress the time ten times"))
    window, seconds = (args.window / 10, args.seconds / 10) if args.quick else (args.window, args.seconds)
    ceiling = round(args.limit * 540 / 600)  # the client's default share of the org's limit
    with tempfile.TemporaryDirectory() as cache_dir, \
            SampleServer(rate_limit=args.limit, window=window, n_users=20_000) as server:
        os.environ["AMPTOOLS_CACHE_DIR"] = cache_dir  # a budget of its own: a fresh start
        client = server.client(rate_limit=ceiling, rate_period=window)
        cancel = threading.Event()
        reached: list[float] = []
        started = time.monotonic()

        def watch() -> None:
            while not cancel.is_set():
                if not reached and client.limiter.pace >= 0.97 * ceiling:
                    reached.append(time.monotonic() - started)
                cancel.wait(window / 120)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        threading.Timer(seconds, cancel.set).start()
        result = client.get_profiles(server.org.user_ids[1:], workers=args.workers, progress=False, cancel=cancel)
        arrivals = server.arrivals

    times = [a.time for a in arrivals]
    throttled = sum(a.status == 429 for a in arrivals)
    peak = most_in_window(times, window)
    tenth = most_in_window(times, window / 10)
    first = min(times)
    second_window = sum(first + window <= t < first + 2 * window for t in times)
    first_window = sum(t < first + window for t in times)
    at = reached[0] if reached else float("inf")
    goals = {
        "throttles": throttled == 0,
        "window": peak <= args.limit,
        "tenth": tenth <= args.limit / 5,
        "reached": at <= window,
        "second": second_window >= 0.97 * ceiling,
    }
    met = lambda name: "met" if goals[name] else "NOT MET"  # noqa: E731
    scale = " (compressed ten times)" if args.quick else ""
    print(f"server: {args.limit} requests per {window:g} s{scale}; client: its defaults, {ceiling} per "
          f"{window:g} s, {args.workers} workers, for {seconds:g} s alone on the org")
    print(f"result: {result!r}")
    print(f"429 answers: {throttled} (goal 0: {met('throttles')}); most in any {window:g} s window: {peak} "
          f"(goal ≤ {args.limit}: {met('window')})")
    print(f"most in any tenth of the window: {tenth} (goal ≤ {args.limit / 5:g}: {met('tenth')})")
    print(f"pace at 97% of the ceiling after {at:.1f} s (goal ≤ {window:g} s, within a window: {met('reached')})")
    print(f"first window: {first_window} requests ({first_window / ceiling:.0%} of the ceiling: the slow start)")
    print(f"second window: {second_window} requests = {second_window / ceiling:.1%} of the ceiling, the "
          f"baseline of a client at full pace from its first request (goal ≥ 97%: {met('second')})")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
