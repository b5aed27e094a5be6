"""Shared budget: three processes of one org with ceilings 540, 300 and 60 a minute.

The sample server admits ``--limit`` requests in any ``--window`` seconds (the org's 600
a minute). Three separate Python processes — three notebooks, or a notebook and two
``amptools fetch`` jobs — start together, each a client of the same org with its own
ceiling (``--ceilings``, per window), and fetch for ``--seconds``. With the shared budget
(the default) they split the org's pace max-min fairly: the largest ceiling among them
is the org's total, and a cautious client is never starved. The baseline, measured in
the same run, gives each process its own budget (``shared_budget=False``). Prints, with
goals, for the second window (all three past their slow start):

- each process's requests against its max-min fair share (each ≥ 80%);
- the most requests of all three in any window (≤ the largest ceiling) and the 429
  answers (0).

    .venv/bin/python benchmarks/bench_shared_budget.py [--limit 600] [--window 60] [--ceilings 540,300,60] [--seconds 120] [--quick]

It takes two minutes per run, two runs. ``--quick`` compresses the time ten times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from _common import ROOT, parse_options
from amptools.ratelimit import fair_shares, most_in_window
from amptools.sample import SampleServer

CHILD = """
import sys, threading
from amptools.client import ProfileClient
from amptools.sample.dataset import SampleOrg
limit, window, shared, first, last, seconds = (int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1",
                                               int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
client = ProfileClient.from_env(rate_limit=limit, rate_period=window, shared_budget=shared, max_retries=20)
ids = list(SampleOrg(n_users=int(sys.argv[7])).user_ids[first:last])
print("ready", flush=True)
sys.stdin.readline()
cancel = threading.Event()
threading.Timer(seconds, cancel.set).start()
ps = client.get_profiles(ids, workers=8, progress=False, cancel=cancel)
print(f"{ps!r}; {client.quota()}", flush=True)
"""
PER_PROCESS = 5000  # ids each process may ask (more than it can in the run)


def run(server: SampleServer, args: argparse.Namespace, ceilings: list[int], *, shared: bool,
        window: float, seconds: float) -> dict[str, object]:
    env = {**os.environ, "AMPLITUDE_SECRET_KEY": server.secret_key, "AMPLITUDE_PROFILE_API_URL": server.url,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(ceiling), str(window), "1" if shared else "0",
                          str(1 + i * PER_PROCESS), str(1 + (i + 1) * PER_PROCESS), str(seconds),
                          str(server.org.n_users)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for i, ceiling in enumerate(ceilings)
    ]
    for child in children:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise SystemExit("a child process failed to start")
    server.reset_arrivals()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for ceiling, child in zip(ceilings, children):
        print(f"  ceiling {ceiling}: {child.communicate(timeout=seconds * 3 + 120)[0].strip()}")
    arrivals = server.arrivals
    first = min(a.time for a in arrivals)
    owner = lambda a: (server.org.find(user_id=a.params["user_id"]) - 1) // PER_PROCESS  # noqa: E731
    second = [a for a in arrivals if first + window <= a.time < first + 2 * window]
    return {
        "throttled": sum(a.status == 429 for a in arrivals),
        "peak": most_in_window([a.time for a in arrivals], window),
        "got": [sum(owner(a) == i for a in second) for i in range(len(ceilings))],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, limit=600, window=60.0, ceilings=("540,300,60", "per window"),
                         seconds=120.0, quick=(0, "1: compress the time ten times"))
    ceilings = [int(c) for c in args.ceilings.split(",")]
    window, seconds = (args.window / 10, args.seconds / 10) if args.quick else (args.window, args.seconds)
    fair = fair_shares(max(ceilings), dict(enumerate(ceilings)))
    results = {}
    with tempfile.TemporaryDirectory() as cache_dir:
        os.environ["AMPTOOLS_CACHE_DIR"] = cache_dir
        with SampleServer(rate_limit=args.limit, window=window, n_users=len(ceilings) * PER_PROCESS + 1) as server:
            print(f"org limit {args.limit} per {window:g} s; {len(ceilings)} processes with ceilings {ceilings} "
                  f"per window, started together, for {seconds:g} s")
            for shared in (False, True):
                print("shared budget (the default)" if shared else "baseline: each process with its own budget")
                results[shared] = run(server, args, ceilings, shared=shared, window=window, seconds=seconds)
    for shared, result in results.items():
        name = "shared" if shared else "baseline"
        got = result["got"]
        print(f"{name:>8}: second window {got} (fair shares {[round(fair[i]) for i in range(len(ceilings))]}); "
              f"most in any window {result['peak']}; 429 answers {result['throttled']}")
    shared = results[True]
    got = shared["got"]
    goals = {
        "each ≥ 80% of its fair share": all(got[i] >= 0.8 * fair[i] for i in range(len(ceilings))),  # type: ignore[index]
        f"most in any window ≤ {max(ceilings)}": shared["peak"] <= max(ceilings),  # type: ignore[operator]
        "0 throttles": shared["throttled"] == 0,
    }
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'NOT MET'}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
