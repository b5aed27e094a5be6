"""Regenerate the pictures of docs/figures.md from the embedded sample org.

Run from the repository root:

    PYTHONPATH=$PWD .venv/bin/python docs/make_images.py

It builds the tables from 600 sample users' answers (read straight from the sample
org's data, so no request is paced) and writes one small PNG per figure into
docs/images/ with kaleido (which needs a chromium on PATH). The figures over time
compare the sample org on its days 0 to 3 (its clock: a model retrains each day). Name figures as
arguments to write only those (``docs/make_images.py cohort_upset``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

import amptools as amp
from amptools import braze, metrics, plots, tables
from amptools.sample import SampleOrg

IMAGES = Path(__file__).resolve().parent / "images"
N_USERS = 600


def sample_tables() -> dict[str, object]:
    """The tables of the first N_USERS sample users, asked as the docs' examples ask."""
    org = SampleOrg()
    query = amp.ProfileQuery(recs=("home-feed", "similar-items", "email-picks"), cohort_ids=True,
                             computations=True, predictions=("0x2a7c", "0x3f1e"))
    params = query.to_params()
    payloads = [org.payload(index, params) for index in range(N_USERS)]
    profiles = tables.as_profiles(payloads, query=query)
    return {
        "recs": tables.recommendations(profiles),
        "cohorts": tables.cohorts(profiles, names=org.cohort_names),
        "computations": tables.computations(profiles),
        "propensities": tables.propensities(profiles),
        "names": org.cohort_names,
    }


def over_time(days: int = 4) -> dict[str, object]:
    """The sample org's first ``days`` days as a store's worth of tables: history, churn, cohort changes."""
    query = amp.ProfileQuery(recs=("home-feed", "similar-items", "email-picks", "trending-now"), cohort_ids=True)
    params = query.to_params()
    recs, cohorts = [], []
    for day in range(days):
        org = SampleOrg(day=day)
        profiles = tables.as_profiles([org.payload(index, params) for index in range(N_USERS)], query=query)
        recs.append(tables.recommendations(profiles))
        cohorts.append(tables.cohorts(profiles))
    history = []
    for day in range(1, days):
        summary = metrics.drift_summary(recs[day - 1], recs[day])
        summary.insert(0, "taken_at_after", pd.Timestamp("2024-06-11", tz="UTC") + pd.Timedelta(days=day))
        summary.insert(0, "after", f"day {day}")
        summary.insert(0, "before", f"day {day - 1}")
        history.append(summary)
    return {
        "history": pd.concat(history, ignore_index=True),
        "churn": metrics.item_churn(recs[0], recs[1]),
        "cohort_changes": tables.cohort_changes(cohorts[0], cohorts[1]),
        "names": SampleOrg().cohort_names,
    }


def figures() -> dict[str, object]:
    """One figure per function of amptools.plots, named as docs/figures.md shows it."""
    t = sample_tables()
    recs, cohorts, comps = t["recs"], t["cohorts"], t["computations"]
    one_set = recs[recs["rec_id"] == "home-feed"]
    return {
        "rec_overlap_heatmap": plots.rec_overlap_heatmap(recs, metric="rbo"),
        "item_frequency": plots.item_frequency(recs),
        "control_vs_treatment": plots.control_vs_treatment(
            recs[recs["rec_id"].isin(["home-feed", "similar-items"])], top_n=6),
        "long_tail": plots.long_tail(recs),
        "user_lists": plots.user_lists(recs, user_id="user-000036"),
        "rank_comparison": plots.rank_comparison(recs, user_id="user-000036",
                                                 left="home-feed", right="similar-items"),
        "cohort_sizes": plots.cohort_sizes(cohorts, max_cohorts=12),
        "cohort_heatmap": plots.cohort_heatmap(cohorts, max_users=300, max_cohorts=15),
        "cohort_overlap": plots.cohort_overlap(cohorts, max_cohorts=6),
        "cohort_upset": plots.cohort_upset(cohorts, max_intersections=12, max_cohorts=6),
        "computation_distribution": plots.computation_distribution(
            comps, computation="revenue_90d", groups=one_set, kind="box"),
        "computation_scatter": plots.computation_scatter(
            comps, x="orders_90d", y="revenue_90d", groups=one_set),
        "propensity_distribution": plots.propensity_distribution(t["propensities"], groups=one_set),
        "call_plan": plots.call_plan(braze.call_plan(20_000, send_rate_per_minute=270, renders_per_message=2,
                                                     other_calls_per_minute=60)),
        **over_time_figures(),
    }


def over_time_figures() -> dict[str, object]:
    """The four figures of docs/figures.md's "Over time"."""
    o = over_time()
    return {
        "drift_over_time": plots.drift_over_time(o["history"]),
        "item_churn": plots.item_churn(o["churn"], group="similar-items"),
        "rank_shift": plots.rank_shift(o["churn"], group="similar-items", top_n=12),
        "cohort_flow": plots.cohort_flow(o["cohort_changes"], names=o["names"], max_cohorts=4),
    }


def main(names: list[str]) -> None:
    """Write every picture, or only those named on the command line."""
    IMAGES.mkdir(exist_ok=True)
    for name, figure in figures().items():
        if names and name not in names:
            continue
        path = IMAGES / f"{name}.png"
        figure.write_image(path, width=900, height=500, scale=1)
        print(f"{path.relative_to(IMAGES.parent.parent)}  {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main(sys.argv[1:])
