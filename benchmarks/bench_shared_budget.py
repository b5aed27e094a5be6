"""Shared budget: two processes against one server limit, as two notebooks of one org.

The sample server admits ``--limit`` requests in any ``--window`` seconds. Two
separate Python processes each fetch ``--users`` ids with a client set to that same
limit, started together. With the shared budget (the default) they take the limit
once between them; the baseline, measured in the same run, gives each process its own
budget (``shared_budget=False``), as every version before did. Prints, with goals:

- the most requests in any sliding window (≤ the limit),
- the 429 answers (0),
- the total throughput as a share of the limit (≥ 95%): requests after the first over
  the first-to-last span, against ``limit / window``.

    .venv/bin/python benchmarks/bench_shared_budget.py [--limit 100] [--window 2] [--users 300] [--workers 8]

The budget file goes to a fresh temporary ``AMPTOOLS_CACHE_DIR``, so nothing else on
the machine takes part.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from _common import ROOT, parse_options
from amptools.ratelimit import most_in_window
from amptools.sample import SampleServer

CHILD = """
import sys
from amptools.client import ProfileClient
from amptools.sample.dataset import SampleOrg
limit, window, shared, first, last, workers = (int(sys.argv[1]), float(sys.argv[2]),
    sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
client = ProfileClient.from_env(rate_limit=limit, rate_period=window, shared_budget=shared,
                                max_retries=20)
ids = list(SampleOrg(n_users=int(sys.argv[7])).user_ids[first:last])
print("ready", flush=True)
sys.stdin.readline()
ps = client.get_profiles(ids, workers=workers, progress=False)
print(f"{ps!r} {client.quota()}", flush=True)
"""


def run(server: SampleServer, args: argparse.Namespace, *, shared: bool) -> dict[str, float]:
    """Two processes started together; the server's view of their requests."""
    env = {**os.environ, "AMPLITUDE_SECRET_KEY": server.secret_key,
           "AMPLITUDE_PROFILE_API_URL": server.url,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(args.limit), str(args.window),
                          "1" if shared else "0", str(1 + i * args.users), str(1 + (i + 1) * args.users),
                          str(args.workers), str(server.org.n_users)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        for i in range(2)
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
    for number, child in enumerate(children, 1):
        print(f"  process {number}: {child.communicate(timeout=600)[0].strip()}")
    arrivals = server.arrivals
    times = [a.time for a in arrivals]
    span = max(times) - min(times)
    return {
        "requests": len(arrivals),
        "throttled": sum(a.status == 429 for a in arrivals),
        "peak": most_in_window(times, args.window),
        "share": (len(times) - 1) / span / (args.limit / args.window) if span > 0 else 1.0,
        "seconds": span,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, limit=100, window=2.0, users=(300, "ids per process"), workers=8)

    with tempfile.TemporaryDirectory() as cache_dir:
        os.environ["AMPTOOLS_CACHE_DIR"] = cache_dir
        with SampleServer(rate_limit=args.limit, window=args.window,
                          n_users=max(2 * args.users + 1, 2000)) as server:
            print(f"limit: {args.limit} requests per {args.window:g} s (server, and each client); "
                  f"2 processes x {args.users} ids, {args.workers} workers each")
            print("baseline: each process with its own budget (shared_budget=False)")
            baseline = run(server, args, shared=False)
            print("shared budget (the default)")
            shared = run(server, args, shared=True)

    for name, result in (("baseline", baseline), ("shared", shared)):
        print(f"{name:>8}: {result['requests']} requests in {result['seconds']:.1f} s, "
              f"{result['throttled']} answered 429, most in any {args.window:g} s window "
              f"{result['peak']}, throughput {result['share']:.1%} of the limit")
    goals = {
        f"most in any window ≤ {args.limit}": shared["peak"] <= args.limit,
        "0 throttles": shared["throttled"] == 0,
        "throughput ≥ 95% of the limit": shared["share"] >= 0.95,
    }
    for goal, met in goals.items():
        print(f"goal {goal}: {'met' if met else 'NOT MET'}")
    print(f"429 answers, baseline / shared: {baseline['throttled']} / {shared['throttled']}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
