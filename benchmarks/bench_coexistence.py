"""Coexistence at the real 60-second window: a Braze campaign sends, and amptools starts a fetch.

The sample server admits ``--limit`` requests in any ``--window`` seconds (the org's 600
a minute). A simulated campaign (Braze Connected Content) sends ``--campaign`` calls a
window, evenly, for ``--seconds``, and never retries: a throttled call is a message
without its recommendations. ``--start`` seconds after the campaign, amptools starts a
fetch with its defaults (``rate_limit`` 540 a minute), knowing nothing of the campaign
(a fresh budget), and fetches until the campaign ends. Both limiters an org may have
are run, one after the other: one that counts only admitted requests, and one that
counts refused ones too (nobody outside Amplitude knows which it is). Prints, with goals:

- the campaign's throttled share over its whole send (≤ 2%), and where its throttles
  fell, window by window;
- amptools' share of what the campaign left: its answered requests per second over the
  limit's rate minus the campaign's (≥ 60%).

The baseline of the same run is the campaign alone for its first ``--start`` seconds
(0 throttles expected).

    .venv/bin/python benchmarks/bench_coexistence.py [--limit 600] [--window 60] [--campaign 400] [--seconds 150] [--start 10] [--workers 8] [--quick]

It takes two and a half minutes per limiter. ``--quick`` compresses the time ten times
(a 6-second window), for a quick look only: the figures to quote are the real ones.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time

import requests

from _common import parse_options
from amptools.sample import SampleServer

CAMPAIGN_USER = "testUser"  # every campaign call asks for this user; amptools never does


class Campaign:
    """Calls evenly spaced at ``rate`` per second from a few threads, never retried."""

    def __init__(self, server: SampleServer, rate: float, threads: int = 6) -> None:
        self.url = f"{server.url}/v1/userprofile"
        self.headers = {"Authorization": f"Api-Key {server.secret_key}"}
        self.interval = 1.0 / rate
        self.slots: queue.Queue[float | None] = queue.Queue()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._call, daemon=True) for _ in range(threads)]
        self.scheduler = threading.Thread(target=self._schedule, daemon=True)

    def start(self) -> None:
        for thread in self.threads:
            thread.start()
        self.scheduler.start()

    def _schedule(self) -> None:
        moment = time.monotonic()
        while not self.stop.is_set():
            self.slots.put(moment)
            moment += self.interval
            delay = moment - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        for _ in self.threads:
            self.slots.put(None)

    def _call(self) -> None:
        with requests.Session() as session:
            while self.slots.get() is not None:
                session.get(self.url, params={"user_id": CAMPAIGN_USER, "get_recs": "true",
                                              "rec_id": "testRecId"},
                            headers=self.headers, timeout=10)

    def finish(self) -> None:
        self.stop.set()
        self.scheduler.join(10)
        for thread in self.threads:
            thread.join(10)


def run(args: object, *, strict: bool, window: float, seconds: float, start: float) -> dict[str, float]:
    limit, campaign_rate, workers = args.limit, args.campaign / window, args.workers  # type: ignore[attr-defined]
    amptools_limit = round(limit * 540 / 600)  # amptools' default share of the org's limit
    with tempfile.TemporaryDirectory() as cache_dir, \
            SampleServer(rate_limit=limit, window=window, count_throttled=strict, n_users=20_000) as server:
        os.environ["AMPTOOLS_CACHE_DIR"] = cache_dir  # a fresh budget: amptools knows nothing yet
        client = server.client(rate_limit=amptools_limit, rate_period=window)
        ids = [i for i in server.org.user_ids if i != CAMPAIGN_USER]
        campaign = Campaign(server, campaign_rate)
        began = time.monotonic()
        campaign.start()
        time.sleep(start)  # the campaign alone
        started = time.monotonic()
        cancel = threading.Event()
        threading.Timer(began + seconds - started, cancel.set).start()
        result = client.get_profiles(ids, workers=workers, progress=False, cancel=cancel)
        ended = time.monotonic()
        campaign.finish()
        arrivals = server.arrivals
        quota = client.quota()

    def campaign_calls(low: float, high: float) -> tuple[int, int]:
        calls = [a for a in arrivals if a.params.get("user_id") == CAMPAIGN_USER and low <= a.time < high]
        return len(calls), sum(a.status == 429 for a in calls)

    alone, alone_throttled = campaign_calls(0.0, started)
    total, throttled = campaign_calls(0.0, float("inf"))
    during, _ = campaign_calls(started, ended)
    ours = [a for a in arrivals if a.params.get("user_id") != CAMPAIGN_USER and started <= a.time < ended]
    ours_ok = sum(a.status == 200 for a in ours)
    duration = ended - started
    left = limit / window - during / duration
    per_window = [campaign_calls(began + k * window, began + (k + 1) * window)[1]
                  for k in range(int(seconds // window) + 1)]
    name = "refused requests too" if strict else "admitted requests only"
    print(f"-- the org's limiter counts {name}")
    print(f"   baseline, the campaign alone for {start:g} s: {alone} calls, {alone_throttled} throttled")
    print(f"   campaign: {total} calls in all, {throttled} throttled ({throttled / total:.2%}); throttles per "
          f"{window:g} s window from its start: {per_window}")
    print(f"   amptools for {duration:.1f} s: {len(ours)} requests, {ours_ok} answered, "
          f"{sum(a.status == 429 for a in ours)} throttled; {result!r}")
    print(f"   amptools at the end: {quota}")
    share = (ours_ok / duration) / left if left > 0 else 0.0
    print(f"   amptools' share of what the campaign left ({left * 60:.0f} a minute): {ours_ok / duration * 60:.0f} "
          f"a minute = {share:.1%}")
    return {"campaign": throttled / total if total else 0.0, "share": share}


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, limit=600, window=60.0, campaign=(400, "campaign calls per window"),
                         seconds=(150.0, "how long the campaign sends"),
                         start=(10.0, "seconds after the campaign's start that amptools starts"), workers=8,
                         quick=(0, "1: compress the time ten times"))
    scale = 10.0 if args.quick else 1.0
    window, seconds, start = args.window / scale, args.seconds / scale, args.start / scale
    print(f"org limit {args.limit} per {window:g} s{' (compressed ten times)' if args.quick else ''}; campaign "
          f"{args.campaign} per window for {seconds:g} s, evenly, no retries; amptools starts {start:g} s in "
          f"with its defaults (rate_limit {round(args.limit * 0.9)} per window), {args.workers} workers")
    results = {strict: run(args, strict=strict, window=window, seconds=seconds, start=start)
               for strict in (False, True)}
    ok = True
    for strict, result in results.items():
        name = "counting refused too" if strict else "counting admitted"
        goals = {"campaign ≤ 2% throttled": result["campaign"] <= 0.02,
                 "amptools ≥ 60% of what was left": result["share"] >= 0.60}
        ok = ok and all(goals.values())
        print(f"{name}: campaign {result['campaign']:.2%} throttled, amptools {result['share']:.1%} of what "
              f"was left — " + "; ".join(f"{goal}: {'met' if met else 'NOT MET'}" for goal, met in goals.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
