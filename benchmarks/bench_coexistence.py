"""Coexistence: amptools fetching while a Braze campaign sends against the same org limit.

The sample server admits ``--limit`` requests in any ``--window`` seconds (600 in a
6 s window by default: the org's 600 a minute, ten times faster). A simulated campaign
(Braze Connected Content) sends two thirds of the limit, evenly spaced, and never
retries: a throttled call is a message without its recommendations. After one window
of the campaign alone, amptools fetches at its default share (``rate_limit`` 90% of the
limit, scaled to the window) until ``--seconds`` have passed. Prints, with goals:

- the campaign's throttled share: its 429 answers over its requests while amptools
  ran (≤ 2%);
- amptools' share of what was left: its answered requests per second over the limit's
  rate minus the campaign's measured rate (≥ 60%).

The baseline of the same run is the campaign alone (its throttled share before
amptools starts: 0 expected).

    .venv/bin/python benchmarks/bench_coexistence.py [--limit 600] [--window 6] [--seconds 54] [--workers 8]
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
            moment += self.interval
            delay = moment - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.slots.put(moment)
        for _ in self.threads:
            self.slots.put(None)

    def _call(self) -> None:
        with requests.Session() as session:
            while (slot := self.slots.get()) is not None:
                session.get(self.url, params={"user_id": CAMPAIGN_USER, "get_recs": "true",
                                              "rec_id": "testRecId"},
                            headers=self.headers, timeout=10)

    def finish(self) -> None:
        self.stop.set()
        self.scheduler.join(10)
        for thread in self.threads:
            thread.join(10)


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, limit=600, window=6.0, seconds=(54.0, "how long amptools fetches"),
                         workers=8)
    campaign_rate = args.limit * 2 / 3 / args.window  # per second
    # amptools' default: 540 of the org's 600 a minute, the same share of this window.
    amptools_limit = round(args.limit * 540 / 600)

    with tempfile.TemporaryDirectory() as cache_dir, \
            SampleServer(rate_limit=args.limit, window=args.window, n_users=20_000) as server:
        os.environ["AMPTOOLS_CACHE_DIR"] = cache_dir
        client = server.client(rate_limit=amptools_limit, rate_period=args.window)
        ids = [i for i in server.org.user_ids if i != CAMPAIGN_USER]
        campaign = Campaign(server, campaign_rate)
        campaign.start()
        time.sleep(args.window)  # the campaign alone fills its share of the window
        started = time.monotonic()
        cancel = threading.Event()
        threading.Timer(args.seconds, cancel.set).start()
        result = client.get_profiles(ids, workers=args.workers, progress=False, cancel=cancel)
        ended = time.monotonic()
        campaign.finish()
        arrivals = server.arrivals
        quota = client.quota()

    def campaign_calls(start: float, end: float) -> tuple[int, int]:
        calls = [a for a in arrivals if a.params.get("user_id") == CAMPAIGN_USER and start <= a.time < end]
        return len(calls), sum(a.status == 429 for a in calls)

    alone, alone_throttled = campaign_calls(0.0, started)
    sent, throttled = campaign_calls(started, ended)
    ours = [a for a in arrivals if a.params.get("user_id") != CAMPAIGN_USER and started <= a.time < ended]
    ours_ok = sum(a.status == 200 for a in ours)
    ours_throttled = sum(a.status == 429 for a in ours)
    duration = ended - started
    left = args.limit / args.window - sent / duration
    campaign_share = throttled / sent if sent else 0.0
    our_share = (ours_ok / duration) / left if left > 0 else 0.0

    print(f"server limit: {args.limit} per {args.window:g} s; campaign: {campaign_rate:.1f}/s "
          f"(two thirds), evenly, no retries; amptools: rate_limit={amptools_limit} per "
          f"{args.window:g} s (its default share, 90%), {args.workers} workers")
    print(f"baseline, campaign alone for {args.window:g} s: {alone} calls, {alone_throttled} throttled")
    print(f"together for {duration:.1f} s: campaign {sent} calls ({sent / duration:.1f}/s), "
          f"{throttled} throttled; amptools {len(ours)} requests, {ours_ok} answered, "
          f"{ours_throttled} throttled; {result!r}")
    print(f"amptools at the end: {quota}")
    windows = int(duration // args.window) + 1
    per_window = [campaign_calls(started + k * args.window, started + (k + 1) * args.window)[1]
                  for k in range(windows)]
    print(f"campaign throttles per {args.window:g} s window while amptools ran: {per_window}")
    print(f"campaign's throttled share: {campaign_share:.2%} "
          f"(goal ≤ 2%: {'met' if campaign_share <= 0.02 else 'NOT MET'})")
    print(f"amptools' share of what was left ({left:.1f}/s): {ours_ok / duration:.1f}/s = {our_share:.1%} "
          f"(goal ≥ 60%: {'met' if our_share >= 0.60 else 'NOT MET'})")
    return 0 if campaign_share <= 0.02 and our_share >= 0.60 else 1


if __name__ == "__main__":
    raise SystemExit(main())
