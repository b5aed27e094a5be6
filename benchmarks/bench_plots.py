"""Build every amptools.plots figure from synthetic 100,000-user tables.

Prints each figure's build time and JSON size (``len(fig.to_json())``): the first
build (after one tiny warm-up figure, since plotly loads its templates on the first
figure of a process) and the median of three more.  Tables have the dtypes of
``amptools.tables`` (``str`` ids, categories, nullable ``boolean`` is_control).
Then the recommendation figures again on the table ``amptools.tables.recommendations``
builds from real ``SampleOrg(n_users=N).payload(...)`` responses (skipped with a
note when those modules are missing).
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
    # dtypes as amptools.tables.RECOMMENDATION_DTYPES: ids "str", repeated strings
    # category (sorted "str" categories), is_control nullable "boolean", us timestamps
    item_names = pd.Index(sorted(f"item-{i}" for i in range(5_000)), dtype="str")
    item_code = pd.Index([f"item-{i}" for i in range(5_000)], dtype="str")  # zipf id -> name
    sorted_code = item_names.get_indexer(item_code)
    set_categories = pd.Index(sorted(sets), dtype="str")
    set_code = set_categories.get_indexer(pd.Index(sets, dtype="str"))[set_of_row]
    model_categories = pd.Index(sorted(set(models.values())), dtype="str")
    model_code = model_categories.get_indexer(pd.Index([models[s] for s in sets], dtype="str"))[set_of_row]
    recs = pd.DataFrame({
        "user_id": pd.array(users, dtype="str").take(user_of_row),
        "device_id": pd.array(devices, dtype="str").take(user_of_row),
        "rec_id": pd.Categorical.from_codes(set_code, set_categories),
        "child_rec_id": pd.Categorical.from_codes(set_code, set_categories),
        "recommendation_source": pd.Categorical.from_codes(model_code, model_categories),
        "is_control": pd.array(np.repeat(control, k), dtype="boolean"),
        "last_updated": pd.Series(pd.Timestamp("2024-05-01", tz="UTC"), index=range(rows)).dt.as_unit("us"),
        "rank": np.tile(np.arange(1, k + 1), n_users * len(sets)).astype("int64"),
        "item": pd.Categorical.from_codes(sorted_code[items.ravel()], item_names),
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
    ids = {"user_id": "str", "device_id": "str"}
    cohorts = cohorts.reset_index(drop=True).astype(ids)
    computations, propensities = computations.astype({**ids, "raw": "str"}), propensities.astype(ids)
    return {"recs": recs, "cohorts": cohorts, "computations": computations, "propensities": propensities}


def sample_org_recs(n_users: int) -> pd.DataFrame | None:
    """The recommendations table built by amptools.tables from real sample-org responses."""
    try:
        from amptools import tables
        from amptools.query import ProfileQuery
        from amptools.sample.dataset import SampleOrg
    except ImportError as exc:
        print(f"(skipping the sample-org measurement: {exc})")
        return None
    org = SampleOrg(n_users=n_users)
    query = ProfileQuery(recs=("home-feed", "similar-items", "email-picks"))
    params = query.to_params()
    payloads = [org.payload(i, params) for i in range(n_users)]
    return tables.recommendations(payloads, query=query)


def time_figures(figures: dict[str, object], repeat: int = 3) -> None:
    """Print, per figure: the first build, the median of ``repeat`` more, and the JSON size."""
    print(f"{'figure':45s} {'first s':>8s} {'median s':>9s} {'JSON KB':>9s}")
    for name, build in figures.items():
        start = time.perf_counter()
        fig = build()
        first = time.perf_counter() - start
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            build()
            times.append(time.perf_counter() - start)
        print(f"{name:45s} {first:8.3f} {float(np.median(times)):9.3f} {len(fig.to_json()) / 1024:9.1f}")


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
    # plotly loads its templates and validators on the first figure of a process
    plots.user_lists(recs.iloc[:10], user_id=one_user)
    time_figures(figures)

    started = time.perf_counter()
    real = sample_org_recs(N_USERS)
    if real is not None:
        print(f"\nsample org: recommendations table of {N_USERS:,} users from SampleOrg payloads via "
              f"amptools.tables.recommendations ({len(real):,} rows, built in {time.perf_counter() - started:.1f} s)")
        user = real["user_id"].dropna().iloc[0]
        sets = list(real["rec_id"].cat.categories)
        time_figures({
            "rec_overlap_heatmap (jaccard)": lambda: plots.rec_overlap_heatmap(real),
            "rec_overlap_heatmap (rbo, by model)": lambda: plots.rec_overlap_heatmap(real, by="recommendation_source", metric="rbo"),
            "item_frequency": lambda: plots.item_frequency(real, color="rec_id", top_n=10),
            "control_vs_treatment": lambda: plots.control_vs_treatment(real),
            "user_lists": lambda: plots.user_lists(real, user_id=user),
            "rank_comparison": lambda: plots.rank_comparison(real, user_id=user, left=sets[0], right=sets[-1]),
            "long_tail": lambda: plots.long_tail(real),
        })


if __name__ == "__main__":
    main()
