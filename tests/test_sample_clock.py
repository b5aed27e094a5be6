"""The sample org's clock, end to end: two days saved to a store give exactly the drift the org was told to make.

The expected drift is worked out here from what the org was told (``SampleOrg.changes``)
and the day-0 lists, with RBO written out from its definition, never from amptools.metrics.
"""

from __future__ import annotations

import pandas as pd
import pytest

import amptools as amp
from amptools import metrics, snapshots, tables
from amptools.sample import SampleOrg, SampleServer
from amptools.sample.clock import DAY_SECONDS, RETRAIN_SHARE, retrained_model

N_USERS = 400
QUERY = amp.ProfileQuery(recs=("home-feed", "similar-items", "email-picks", "trending-now"), cohort_ids=True,
                         computations=True)


def rbo_of_a_new_top_item(length: int, p: float = 0.9) -> float:
    """RBO_ext (Webber et al., eq. 30) of a list and the same list with a new item on top, the last dropped.

    At depth d the two prefixes share d - 1 items, so X_d / d = (d - 1) / d.
    """
    agreement = sum((d - 1) / d * p**d for d in range(1, length + 1))
    return (length - 1) / length * p**length + (1 - p) / p * agreement


def fetch(day: int, ids: list[str]):
    with SampleServer(day=day, rate_limit=100_000) as server:
        client = server.client(rate_limit=100_000)
        client.acknowledge_exposure()
        return client.get_profiles(ids, query=QUERY, progress=False)


@pytest.fixture(scope="module")
def two_days(tmp_path_factory):
    store = tmp_path_factory.mktemp("clock") / "store"
    ids = list(SampleOrg().user_ids[:N_USERS])
    for day in (0, 1):
        snapshots.save(fetch(day, ids), store, taken_at=pd.Timestamp("2024-06-11", tz="UTC") + pd.Timedelta(days=day),
                       label=f"day {day}")
    return store, SampleOrg(day=1)


def lists(recs: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for row in recs.sort_values("rank", kind="stable").itertuples(index=False):
        out.setdefault((row.user_id, str(row.rec_id)), []).append(str(row.item))
    return out


def test_day_zero_is_the_org_as_drawn_and_every_day_is_deterministic():
    params = QUERY.to_params()
    for index in (0, 1, 17, 399):
        assert SampleOrg(day=0).payload(index, params) == SampleOrg().payload(index, params)
        assert SampleOrg(day=3).payload(index, params) == SampleOrg(day=3).payload(index, params)
    assert SampleOrg(day=2).payload(0, params) == SampleOrg().payload(0, params)  # the test user never changes
    assert SampleOrg(day=2).changes(0) == SampleOrg().changes(5)
    with pytest.raises(ValueError, match="day must be a whole number"):
        SampleOrg(day=-1)
    assert repr(SampleOrg(day=2)).endswith("day=2)")


def test_two_days_give_exactly_the_drift_the_org_was_told_to_make(two_days):
    store, org = two_days
    before, after = snapshots.pair(store)
    assert (before.label, after.label) == ("day 0", "day 1")
    old, new = lists(before.recommendations), lists(after.recommendations)
    control = {(r.user_id, str(r.rec_id)) for r in before.recommendations.itertuples(index=False) if r.is_control}
    model = retrained_model(org.models, 1)
    assert model == "two-tower-v1"
    index_of = {org.user_ids[i]: i for i in range(N_USERS)}
    expected_changed = set()
    for (user, rec_id), items in old.items():
        top = org.changes(index_of[user]).retrained.get(rec_id)
        if top is None or (user, rec_id) in control:
            assert new[user, rec_id] == items, (user, rec_id)  # untouched
            continue
        assert org.rec_models[rec_id] == model
        assert new[user, rec_id] == [top, *items[:-1]] and top not in items  # what the org was told
        expected_changed.add((user, rec_id))
    assert 0.1 < len(expected_changed) / sum(org.rec_models[r] == model for _, r in old) < 0.3  # about RETRAIN_SHARE

    drift = metrics.drift(before.recommendations, after.recommendations)
    changed = {(r.user_id, str(r.rec_id)) for r in drift.itertuples(index=False) if r.changed}
    assert changed == expected_changed
    shift = drift[drift["changed"]]
    assert shift["jaccard"].to_numpy() == pytest.approx(9 / 11)
    assert (shift["n_added"] == 1).all() and (shift["n_removed"] == 1).all()
    assert shift["rbo"].to_numpy() == pytest.approx(rbo_of_a_new_top_item(10), abs=1e-12)
    assert shift["top_changed"].all() and not drift.loc[~drift["changed"], "top_changed"].any()
    assert (drift.loc[~drift["changed"], ["jaccard", "rbo"]] == 1.0).all().all()

    summary = metrics.drift_summary(before.recommendations, after.recommendations).set_index("rec_id")
    for rec_id, row in summary.iterrows():
        compared = [key for key in old if key[1] == rec_id]
        n_changed = sum(key in expected_changed for key in compared)
        assert row["n_users_compared"] == len(compared) and row["n_users_only_before"] == 0
        assert row["share_changed"] == pytest.approx(n_changed / len(compared))
        assert row["mean_jaccard"] == pytest.approx((n_changed * 9 / 11 + len(compared) - n_changed) / len(compared))
        assert row["mean_rbo"] == pytest.approx(
            (n_changed * rbo_of_a_new_top_item(10) + len(compared) - n_changed) / len(compared))
    assert summary.loc["similar-items", "share_changed"] > 0.1
    assert (summary.drop(index="similar-items")["share_changed"] == 0).all()
    times = after.recommendations[after.recommendations["rec_id"] == "similar-items"]
    retrained_rows = times.set_index(["user_id"]).loc[[u for u, r in expected_changed]]
    assert (retrained_rows["last_updated"] == pd.Timestamp(org.as_of + DAY_SECONDS, unit="s", tz="UTC")).all()


def test_cohorts_and_computed_properties_move_as_told(two_days):
    store, org = two_days
    before, after = snapshots.pair(store)
    changes = tables.cohort_changes(before, after)
    member_before = {(r.user_id, str(r.cohort_id)) for r in before.cohorts.itertuples(index=False)}
    moved = {(r.user_id, str(r.cohort_id), str(r.change)) for r in changes.itertuples(index=False)
             if r.change != "stayed"}
    expected = set()
    for user in before.users["user_id"]:
        for cohort in org.changes(org.find(user_id=user)).cohort_flips:
            expected.add((user, cohort, "left" if (user, cohort) in member_before else "joined"))
    assert moved == expected and moved
    values = tables.computation_changes(before, after)
    got = {(r.user_id, str(r.computation)): r.after for r in values.itertuples(index=False) if r.changed}
    told = {}
    for user in before.users["user_id"]:
        index = org.find(user_id=user)
        for name, value in org.changes(index).computations.items():
            told[user, name] = float(value)
    assert got == told and got
    assert (values.loc[~values["changed"], "delta"].fillna(0) == 0).all()


@pytest.mark.slow
def test_a_week_of_snapshots_shows_each_retrain(tmp_path):
    store = tmp_path / "store"
    ids = list(SampleOrg().user_ids[:150])
    for day in range(4):
        snapshots.save(fetch(day, ids), store, taken_at=f"2024-06-{11 + day}")
    history = snapshots.drift_history(store)
    assert len(history) == 3 * 4  # three pairs of days, four sets
    org = SampleOrg()
    for day, pair in zip(range(1, 4), history.groupby("after", sort=True)):
        _, rows = pair
        model = retrained_model(org.models, day)
        for row in rows.itertuples(index=False):
            served = org.rec_models[str(row.rec_id)] == model
            assert (row.mean_rbo < 1.0) == served, (day, row.rec_id)
            if served:
                assert row.share_changed <= 2 * RETRAIN_SHARE
