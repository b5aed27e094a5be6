"""Requests sent per user: the two-request way against one request per user.

1,000 sample-org users asked for recommendations, properties, cohorts, all
computations and predictions, twice against the same server: with
``split_computations=True`` (two requests per user: properties apart from
computations) and with the default (one merged request per user, computations told
apart by the org's computation names, learned in the run). Prints the requests per
user of each, their ratio, and whether the computations and properties tables of the
two ways are identical. Goal: ≤ 1.02 requests per user, identical tables.

    .venv/bin/python benchmarks/bench_requests_per_user.py [--users 1000] [--workers 16]
"""

from __future__ import annotations

import os
import time
import warnings

from _common import parse_options
from amptools import ProfileQuery, tables
from amptools.sample import SampleServer

QUERY = ProfileQuery(recs=("home-feed", "similar-items"), amp_props=True, cohort_ids=True,
                     computations=True, predictions=("0x2a7c", "0x3f1e"))


def _sorted(frame):
    return frame.sort_values(["user_id", "computation"]).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, users=1000, workers=16)
    warnings.simplefilter("ignore")  # the exposure note, once per client
    # A key of its own: nothing this process or a cache learned about the org counts.
    with SampleServer(rate_limit=100_000, secret_key="bench-" + os.urandom(6).hex()) as server:
        ids = list(server.org.user_ids[1:args.users + 1])
        runs = {}
        for name, query in (("two requests (split_computations=True)", QUERY.split()),
                            ("one request (default)", QUERY)):
            server.reset_arrivals()
            started = time.monotonic()
            result = server.client(rate_limit=100_000).get_profiles(
                ids, query, workers=args.workers, progress=False)
            runs[name] = (result, len(server.arrivals), time.monotonic() - started)
    print(f"{len(ids):,} users; recommendations, properties, cohorts, all computations, predictions")
    for name, (result, requests, elapsed) in runs.items():
        print(f"  {name:<40} {requests:>6,} requests  {requests / len(ids):.3f} per user  "
              f"({result!r}, {elapsed:.1f} s)")
    (split, split_requests, _), (merged, merged_requests, _) = runs.values()
    ratio = merged_requests / len(ids)
    same_comps = _sorted(tables.computations(split)).equals(_sorted(tables.computations(merged)))
    same_props = tables.properties(split).equals(tables.properties(merged))
    print(f"requests per user: {split_requests / len(ids):.3f} -> {ratio:.3f} "
          f"(x{split_requests / merged_requests:.2f} fewer); goal ≤ 1.02: {'met' if ratio <= 1.02 else 'NOT met'}")
    print(f"computations table identical: {same_comps}; properties table identical: {same_props}")
    return 0 if ratio <= 1.02 and same_comps and same_props else 1


if __name__ == "__main__":
    raise SystemExit(main())
