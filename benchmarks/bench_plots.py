"""Build every amptools.plots figure from synthetic 100,000-user tables.

Prints each figure's build time and JSON size (``len(fig.to_json())``).
Tables: 3 rec sets × 10 items (Zipf-skewed catalog of 5,000 items, 10 % control),
~5 cohorts per user out of 30, 6 computations, 2 predictions.

Run:  .venv/bin/python benchmarks/bench_plots.py [n_users]
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from amptools import plots

N_USERS = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000


def zipf_lists(rng: np.random.Generator, n_lists: int, k: int, n_items: int, a: float = 1.1) -> np.ndarray:
    """n_lists × k distinct item ids, Zipf-skewed, most popular first.

    Draws 3k ids per list from the Zipf-like weights, keeps the first k distinct
    ones (duplicates pushed to the end by a sort); the rare short row is padded with
    uniform ids.
    """
    weights = 1 / np.arange(1, n_items + 1) ** a
    draws = rng.choice(n_items, size=(n_lists, 3 * k), p=weights / weights.sum())
    draws.sort(axis=1)
    repeated = np.zeros_like(draws, dtype=bool)
    repeated[:, 1:] = draws[:, 1:] == draws[:, :-1]
    draws[repeated] = n_items  # sentinel sorts last
    draws.sort(axis=1)
    out = draws[:, :k]
    short = out == n_items
    out[short] = rng.integers(0, n_items, short.sum())
    return out


def synthetic_tables(n_users: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    users = np.array([f"user-{i:07d}" for i in range(n_users)], dtype=object)
    devices = np.array([f"dev-{i:07d}" for i in range(n_users)], dtype=object)
    sets, k = ["home_page", "cart", "email"], 10
    models = {"home_page": "collab_v2", "cart": "collab_v2", "email": "popular_v1"}
    items = zipf_lists(rng, n_users * len(sets), k, 5_000)
    rows = n_users * len(sets) * k
    set_of_row = np.tile(np.repeat(np.arange(len(sets)), k), n_users)
    user_of_row = np.repeat(np.arange(n_users), len(sets) * k)
    control = rng.random(n_users * len(sets)) < 0.1
    recs = pd.DataFrame({
        "user_id": users[user_of_row], "device_id": devices[user_of_row],
        "rec_id": pd.Categorical.from_codes(set_of_row, sets),
        "child_rec_id": pd.Categorical.from_codes(set_of_row, sets),
        "recommendation_source": pd.Categorical(np.array([models[s] for s in sets])[set_of_row]),
        "is_control": np.repeat(control, k),
        "last_updated": pd.Timestamp("2024-05-01", tz="UTC"),
        "rank": np.tile(np.arange(1, k + 1), n_users * len(sets)).astype("int64"),
        "item": pd.Categorical.from_codes(items.ravel(), [f"item-{i}" for i in range(5_000)]),
    })
    assert len(recs) == rows
    # ~5 cohorts per user out of 30, skewed sizes
    cohort_weights = 1 / np.arange(1, 31) ** 0.7
    memberships = rng.poisson(5, n_users).clip(1, 15)
    user_rep = np.repeat(np.arange(n_users), memberships)
    cohort_draw = rng.choice(30, size=len(user_rep), p=cohort_weights / cohort_weights.sum())
    cohorts = pd.DataFrame({"user_id": users[user_rep], "device_id": devices[user_rep],
                            "cohort_id": pd.Categorical([f"cohort_{c:02d}" for c in cohort_draw])}).drop_duplicates()
    names = [f"computed-prop-{i}" for i in range(1, 7)]
    base = rng.lognormal(3, 1, size=(n_users, 6))
    base[:, 1] = base[:, 0] * rng.lognormal(0, 0.3, n_users)  # a correlated pair for the scatter
    computations = pd.DataFrame({"user_id": np.repeat(users, 6), "device_id": np.repeat(devices, 6),
                                 "computation": pd.Categorical(np.tile(names, n_users)), "value": base.ravel()})
    computations["raw"] = computations["value"].astype(str)
    propensities = pd.DataFrame({"user_id": np.repeat(users, 2), "device_id": np.repeat(devices, 2),
                                 "prediction_id": pd.Categorical(np.tile(["churn_30d", "purchase_7d"], n_users)),
                                 "propensity_type": pd.Categorical(np.tile(["score", "pct"], n_users)),
                                 "value": np.c_[rng.beta(2, 5, n_users), rng.uniform(0, 100, n_users)].ravel()})
    return {"recs": recs, "cohorts": cohorts, "computations": computations, "propensities": propensities}


def main() -> None:
    started = time.perf_counter()
    tables = synthetic_tables(N_USERS)
    recs, cohorts, computations, propensities = (tables[k] for k in ("recs", "cohorts", "computations", "propensities"))
    print(f"synthetic tables for {N_USERS:,} users built in {time.perf_counter() - started:.2f} s "
          f"(recs {len(recs):,} rows, cohorts {len(cohorts):,}, computations {len(computations):,}, "
          f"propensities {len(propensities):,})")
    one_user = recs["user_id"].iloc[0]
    figures = {
        "rec_overlap_heatmap (jaccard)": lambda: plots.rec_overlap_heatmap(recs),
        "rec_overlap_heatmap (rbo, by model)": lambda: plots.rec_overlap_heatmap(recs, by="recommendation_source", metric="rbo"),
        "item_frequency": lambda: plots.item_frequency(recs, color="rec_id", top_n=10),
        "control_vs_treatment": lambda: plots.control_vs_treatment(recs),
        "user_lists": lambda: plots.user_lists(recs, user_id=one_user),
        "rank_comparison": lambda: plots.rank_comparison(recs, user_id=one_user, left="home_page", right="cart"),
        "long_tail": lambda: plots.long_tail(recs),
        "cohort_heatmap": lambda: plots.cohort_heatmap(cohorts),
        "cohort_sizes": lambda: plots.cohort_sizes(cohorts),
        "cohort_overlap": lambda: plots.cohort_overlap(cohorts),
        "cohort_upset": lambda: plots.cohort_upset(cohorts),
        "computation_distribution (histogram)": lambda: plots.computation_distribution(
            computations, computation="computed-prop-1", groups=cohorts),
        "computation_distribution (box)": lambda: plots.computation_distribution(
            computations, computation="computed-prop-1", groups=cohorts, kind="box"),
        "computation_distribution (violin, control)": lambda: plots.computation_distribution(
            computations, computation="computed-prop-1", groups=recs[recs["rec_id"] == "home_page"], kind="violin"),
        "computation_scatter": lambda: plots.computation_scatter(
            computations, x="computed-prop-1", y="computed-prop-2", groups=cohorts),
        "propensity_distribution": lambda: plots.propensity_distribution(propensities, groups=cohorts),
    }
    print(f"{'figure':45s} {'build s':>8s} {'JSON KB':>9s}")
    for name, build in figures.items():
        start = time.perf_counter()
        fig = build()
        elapsed = time.perf_counter() - start
        print(f"{name:45s} {elapsed:8.3f} {len(fig.to_json()) / 1024:9.1f}")


if __name__ == "__main__":
    main()
