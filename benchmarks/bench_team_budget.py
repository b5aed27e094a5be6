"""Team budget: three machines of one org, per-machine budgets against one Redis budget.

Three separate Python processes, each with a cache folder of its own
(``AMPTOOLS_CACHE_DIR``: three machines — two analysts' JupyterHub pods and a nightly
``amptools fetch``), fetch from one org for ``--seconds``, each with the default ceiling
(540 a minute), while a simulated Braze campaign sends ``--campaign`` calls a minute and
never retries (``bench_coexistence.Campaign``). The sample server admits ``--limit``
requests in any ``--window`` seconds (the org's 600 a minute). Measured in the same run:

- the baseline: each machine on its own budget (today's default on three machines);
- the team budget: every process names one Redis (``AMPTOOLS_BUDGET_URL``), a
  ``redis-server`` this script starts on a free loopback port.

Prints, for each: amptools' 429 answers, the most of amptools' admitted requests in any
window (goal ≤ the ceiling), each process's requests in the second window (all past their
slow start) against its max-min fair share (goal within 20%), and the campaign's
throttled share. Goals with Redis: 0 throttles, the fullest window ≤ the ceiling, every
process within 20% of its fair share.

Then the round trips, with one client in this process at the org's whole 600 a minute
(past its slow start) on a Redis ``--latency`` seconds away each way (a delaying TCP
proxy): one permit per call against a few per call (the default), as a share of the
ceiling (goal ≥ 95%).

    .venv/bin/python benchmarks/bench_team_budget.py [--limit 600] [--window 60] [--seconds 120] [--campaign 50] [--latency 0.05] [--quick 1]

Two runs of ``--seconds`` (4 min) and 1 min of latency runs; ``--quick 1`` compresses
the time ten times. Needs ``redis-server`` (``apt-get install redis-server``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from _common import ROOT, parse_options
from bench_coexistence import CAMPAIGN_USER, Campaign
from bench_shared_budget import CHILD, PER_PROCESS

PROCESSES = 3

sys.path.insert(0, str(ROOT / "tests"))
from redis_server import DelayProxy, RedisServer, grant_times  # noqa: E402 - the tests' redis-server, proxy, load

import amptools.redis_budget as redis_budget  # noqa: E402
from amptools.ratelimit import PaceState, RateLimiter, fair_shares, most_in_window  # noqa: E402
from amptools.redis_budget import RedisStore, namespace  # noqa: E402
from amptools.sample import SampleServer  # noqa: E402



def run(server: SampleServer, budget_url: str | None, *, window: float, seconds: float,
        campaign: float) -> dict[str, object]:
    env = {**os.environ, "AMPLITUDE_SECRET_KEY": server.secret_key, "AMPLITUDE_PROFILE_API_URL": server.url,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("AMPTOOLS_BUDGET_URL", None)
    if budget_url is not None:
        env["AMPTOOLS_BUDGET_URL"] = budget_url
    folders = [tempfile.mkdtemp(prefix="amptools-machine-") for _ in range(PROCESSES)]
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, "540", str(window), "1", str(1 + i * PER_PROCESS),
                          str(1 + (i + 1) * PER_PROCESS), str(seconds), str(server.org.n_users)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         env={**env, "AMPTOOLS_CACHE_DIR": folders[i]})
        for i in range(PROCESSES)
    ]
    for child in children:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("a child process failed to start")
    server.reset_arrivals()
    calls = Campaign(server, campaign / window)
    calls.start()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for i, child in enumerate(children):
        print(f"  machine {i + 1}: {child.communicate(timeout=seconds * 3 + 120)[0].strip()}")
    calls.finish()
    arrivals = server.arrivals
    ours = [a for a in arrivals if a.params.get("user_id") != CAMPAIGN_USER]
    theirs = [a for a in arrivals if a.params.get("user_id") == CAMPAIGN_USER]
    first = min(a.time for a in ours)
    owner = lambda a: (server.org.find(user_id=a.params["user_id"]) - 1) // PER_PROCESS  # noqa: E731
    second = [a for a in ours if first + window <= a.time < first + 2 * window]
    return {
        "throttled": sum(a.status == 429 for a in ours),
        "peak": most_in_window([a.time for a in ours if a.status == 200], window),
        "got": [sum(owner(a) == i for a in second) for i in range(PROCESSES)],
        "campaign": sum(a.status == 429 for a in theirs) / max(1, len(theirs)),
    }


def latency_share(redis: RedisServer, delay: float, batch: int, seconds: float) -> float:
    """One client at 600 a minute on a Redis ``delay`` s away each way, past its slow start:
    its grants a second (the opening burst left out) as a share of the ceiling."""
    redis_budget.MAX_BATCH = batch
    proxy = DelayProxy(redis.port, delay)
    store = RedisStore(proxy.url())
    try:
        scope = f"bench-latency-{batch}-{time.monotonic()}"
        now_seconds, micros = redis.client().time()  # type: ignore[attr-defined]
        now = float(now_seconds) + micros / 1e6
        state = PaceState(rate=10.0, updated=now, probe_until=now, active=now)
        redis.client().hset(f"{namespace(scope)}:pace",  # type: ignore[attr-defined]
                            mapping={name: repr(value) for name, value in vars(state).items()})
        times = grant_times(RateLimiter(600, 60.0, ledger=store.ledger(scope)), seconds)
    finally:
        store.close()
        proxy.close()
        redis_budget.MAX_BATCH = 8
    burst = 30  # ClientPace.burst(10, 60): sent back to back at the start
    return (len(times) - burst) / (times[-1] - times[0]) / 10.0


def main(argv: list[str] | None = None) -> int:
    args: argparse.Namespace = parse_options(
        __doc__, argv, limit=600, window=60.0, seconds=120.0, campaign=(50, "campaign calls per window"),
        latency=(0.05, "seconds each way for the round-trip runs"), quick=(0, "1: compress the time ten times"))
    window, seconds = (args.window / 10, args.seconds / 10) if args.quick else (args.window, args.seconds)
    ceiling = 540
    fair = fair_shares(ceiling, dict.fromkeys(range(PROCESSES), ceiling))
    results = {}
    with RedisServer() as redis, SampleServer(rate_limit=args.limit, window=window,
                                              n_users=PROCESSES * PER_PROCESS + 1) as server:
        print(f"org limit {args.limit} per {window:g} s; {PROCESSES} machines at {ceiling} per window each, "
              f"started together, for {seconds:g} s; a campaign at {args.campaign} per window")
        for name, url in (("per-machine budgets (the baseline)", None), ("one Redis budget", redis.url)):
            print(name)
            results[url is not None] = run(server, url, window=window, seconds=seconds, campaign=args.campaign)
        latency_seconds = 15.0 if not args.quick else 8.0
        print(f"one client at 600 a minute, Redis {args.latency * 1000:g} ms away each way:")
        shares = {batch: latency_share(redis, args.latency, batch, latency_seconds) for batch in (1, 8)}
    print()
    print(f"{'':>34} {'per machine':>14} {'one Redis':>14}   goal (Redis)")
    rows = [
        ("amptools' 429 answers", "throttled", "0"),
        (f"fullest {window:g} s of amptools'", "peak", f"≤ {ceiling}"),
        ("campaign throttled", "campaign", ""),
    ]
    for label, key, goal in rows:
        values = [results[shared][key] for shared in (False, True)]
        shown = [f"{v:.1%}" if key == "campaign" else str(v) for v in values]
        print(f"{label:>34} {shown[0]:>14} {shown[1]:>14}   {goal}")
    for i in range(PROCESSES):
        got = [results[shared]["got"][i] for shared in (False, True)]  # type: ignore[index]
        print(f"{f'machine {i + 1}, second window':>34} {got[0]:>14} {got[1]:>14}   {fair[i]:.0f} ± 20%")
    print(f"{'one call per permit':>34} {shares[1]:>29.1%}   ≥ 95%")
    print(f"{'a few permits per call (default)':>34} {shares[8]:>29.1%}   ≥ 95%")
    team = results[True]
    goals = {
        "0 throttles": team["throttled"] == 0,
        f"fullest window ≤ {ceiling}": team["peak"] <= ceiling,  # type: ignore[operator]
        "every machine within 20% of its fair share": all(
            abs(team["got"][i] - fair[i]) <= 0.2 * fair[i] for i in range(PROCESSES)),  # type: ignore[index]
        "≥ 95% of the ceiling through the latency": shares[8] >= 0.95,
    }
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'NOT MET'}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
