"""Benchmark: metrics.drift against a pandas merge-and-apply baseline, and 1,000,000 users.

What is measured (in this run, on this machine):

- Data: two snapshots of one recommendation set: ``--users`` users × 10 items from a
  catalogue of 5,000 (the recommendations table's dtypes: text ids, categorical items),
  where the second snapshot's lists changed for 30 % of the users (a retrain: one new
  item on top, the rest shifted down).
- ``baseline``: what an analyst writes with pandas: each snapshot's lists as Python
  lists (``groupby().agg(list)``), ``merge`` of the two on the user and set, then
  ``apply`` of ``metrics.jaccard`` and ``metrics.rbo`` row by row — on ``--baseline-users``
  users (100,000 by default; a million takes minutes).
- ``amptools``: ``metrics.drift(before, after)`` on the same users, and then on
  ``--users`` (1,000,000) users, whose time must stay under 5 s.

The two must agree to 1e-12 on every user. Prints both times, the ratio at the same
size and the time at a million users. Best of ``--repeat`` runs.

Run::

    .venv/bin/python benchmarks/bench_drift.py
    .venv/bin/python benchmarks/bench_drift.py --users 200000 --baseline-users 20000
"""

from __future__ import annotations

import sys
import time

from _common import parse_options

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from amptools import metrics  # noqa: E402

ITEMS = 10
CATALOGUE = 5_000
GOAL_SECONDS = 5.0


def snapshots(n_users: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two recommendations tables of one set; 30 % of the users' lists changed."""
    rng = np.random.default_rng(seed)
    users = np.array([f"user-{i:07d}" for i in range(n_users)], dtype=object)
    names = np.array([f"item-{j:05d}" for j in range(CATALOGUE)], dtype=object)
    items = rng.integers(0, CATALOGUE, (n_users, ITEMS))
    changed = items.copy()
    moved = rng.random(n_users) < 0.3
    changed[moved, 1:] = items[moved, :-1]
    changed[moved, 0] = rng.integers(0, CATALOGUE, int(moved.sum()))

    def table(codes: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({
            "user_id": pd.array(np.repeat(users, ITEMS), dtype="str"),
            "device_id": pd.array(np.repeat(users, ITEMS), dtype="str"),
            "rec_id": pd.Categorical.from_codes(np.zeros(n_users * ITEMS, dtype=np.int8), categories=["home-feed"]),
            "rank": np.tile(np.arange(1, ITEMS + 1), n_users),
            "item": pd.Categorical.from_codes(codes.ravel(), categories=names),
        })

    return table(items), table(changed)


def baseline(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Lists per user and set, merged, then the list metrics row by row."""
    def lists(frame: pd.DataFrame) -> pd.DataFrame:
        ordered = frame.sort_values(["user_id", "device_id", "rec_id", "rank"])
        return (ordered.groupby(["user_id", "device_id", "rec_id"], observed=True)["item"]
                .agg(lambda s: list(s.astype(str))).reset_index())

    merged = lists(before).merge(lists(after), on=["user_id", "device_id", "rec_id"], suffixes=("_before", "_after"))
    merged["jaccard"] = merged.apply(lambda r: metrics.jaccard(r["item_before"], r["item_after"]), axis=1)
    merged["rbo"] = merged.apply(lambda r: metrics.rbo(r["item_before"], r["item_after"]), axis=1)
    return merged


def best_of(repeat: int, function, *args):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv: list[str] | None = None) -> int:
    options = parse_options(__doc__, argv, users=(1_000_000, "users of the big run"),
                            baseline_users=(100_000, "users of the comparison with the baseline"),
                            repeat=(3, "best of this many runs"))
    print(f"pandas {pd.__version__}, numpy {np.__version__}; python {sys.version.split()[0]}")
    before, after = snapshots(options.baseline_users)
    base_time, expected = best_of(1, baseline, before, after)
    ours_time, got = best_of(options.repeat, metrics.drift, before, after)
    check = expected.merge(got, on=["user_id", "device_id"], suffixes=("_baseline", "_ours"))
    worst = max(float((check["jaccard_baseline"] - check["jaccard_ours"]).abs().max()),
                float((check["rbo_baseline"] - check["rbo_ours"]).abs().max()))
    agree = len(check) == len(expected) == len(got) and worst <= 1e-12
    print(f"{options.baseline_users:,} users × {ITEMS} items: baseline (merge + apply) {base_time:7.2f} s, "
          f"amptools drift {ours_time:6.3f} s — ratio x{base_time / ours_time:,.0f}; "
          f"same values: {'yes' if agree else 'NO'} (largest difference {worst:.1e})")
    before, after = snapshots(options.users, seed=1)
    big_time, result = best_of(options.repeat, metrics.drift, before, after)
    summary_time, summary = best_of(1, metrics.drift_summary, before, after)
    print(f"{options.users:,} users × {ITEMS} items: drift {big_time:.2f} s (goal < {GOAL_SECONDS:.0f} s: "
          f"{'met' if big_time < GOAL_SECONDS else 'NOT met'}), drift_summary {summary_time:.2f} s; "
          f"{result['changed'].mean():.1%} of the lists changed (30 % were told to)")
    return 0 if agree and big_time < GOAL_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
