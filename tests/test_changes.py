"""tables.cohort_changes and tables.computation_changes against hand-made answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import amptools as amp
from amptools import tables

QUERY = amp.ProfileQuery(cohort_ids=True, computations=True)


def answer(user, cohorts=None, computations=None, device=None):
    data = {"user_id": user, "device_id": device or f"d-{user}", "recommendations": None,
            "cohort_ids": cohorts, "amp_props": computations}
    return {"userData": data}


BEFORE = [
    answer("ann", ["c1", "c2"], {"orders": "3", "ltv": "10.5", "flag": "n/a"}),
    answer("bob", ["c2"], {"orders": "1", "ltv": None}),
    answer("cat", [], {"orders": "0"}),
    answer("dan", ["c1"], {"orders": "2"}),                # not in the second snapshot
    answer("eve", ["c3"], {"orders": "5"}, device="shared-device"),
]
AFTER = [
    answer("bob", ["c1"], {"orders": "1", "ltv": "2"}),
    answer("ann", ["c2", "c3"], {"orders": "4", "ltv": "10.5"}),
    answer("cat", ["c1"], {"orders": "0", "new_one": "7"}),
    answer("fay", ["c2"], {"orders": "9"}),                # not in the first snapshot
    answer("eve", ["c3"], {"orders": "5"}, device="shared-device"),
]


def profiles(answers):
    return tables.as_profiles(answers, query=QUERY)


def test_cohort_changes_of_the_users_in_both():
    changes = tables.cohort_changes(profiles(BEFORE), profiles(AFTER))
    assert list(changes.columns) == list(tables.COHORT_CHANGE_COLUMNS)
    assert changes["change"].dtype == tables.CHANGE_DTYPE and changes["cohort_id"].dtype == "category"
    got = {(r.user_id, r.cohort_id, r.change) for r in changes.itertuples(index=False)}
    assert got == {("ann", "c1", "left"), ("ann", "c2", "stayed"), ("ann", "c3", "joined"),
                   ("bob", "c2", "left"), ("bob", "c1", "joined"),
                   ("cat", "c1", "joined"), ("eve", "c3", "stayed")}
    assert list(dict.fromkeys(changes["user_id"])) == ["ann", "bob", "cat", "eve"]  # order of appearance
    # the same from the cohorts tables: a user without rows is one in no cohort
    from_tables = tables.cohort_changes(tables.cohorts(profiles(BEFORE)), tables.cohorts(profiles(AFTER)))
    assert {(r.user_id, r.cohort_id, r.change) for r in from_tables.itertuples(index=False)} == got - {
        ("cat", "c1", "joined")}  # cat has no row before: not in both tables


def test_computation_changes_of_the_users_in_both():
    changes = tables.computation_changes(profiles(BEFORE), profiles(AFTER))
    assert list(changes.columns) == list(tables.COMPUTATION_CHANGE_COLUMNS)
    rows = {(r.user_id, r.computation): r for r in changes.itertuples(index=False)}
    assert set(rows) == {("ann", "orders"), ("ann", "ltv"), ("ann", "flag"), ("bob", "orders"), ("bob", "ltv"),
                         ("cat", "orders"), ("cat", "new_one"), ("eve", "orders")}
    ann = rows["ann", "orders"]
    assert (ann.before, ann.after, ann.delta, ann.changed) == (3.0, 4.0, 1.0, True)
    assert not rows["ann", "ltv"].changed and rows["ann", "ltv"].delta == 0.0
    flag = rows["ann", "flag"]  # text that is no number, gone afterwards
    assert math.isnan(flag.before) and math.isnan(flag.after) and flag.changed
    bob = rows["bob", "ltv"]  # null, then "2"
    assert math.isnan(bob.before) and bob.after == 2.0 and math.isnan(bob.delta) and bob.changed
    assert rows["cat", "new_one"].changed and not rows["eve", "orders"].changed
    assert changes["before"].dtype == "float64" and changes["changed"].dtype == bool


def test_changes_of_snapshots_and_of_empty_input(tmp_path):
    from amptools import snapshots

    store = tmp_path / "store"
    snapshots.save(profiles(BEFORE), store, taken_at="2024-01-01")
    snapshots.save(profiles(AFTER), store, taken_at="2024-01-02")
    first, second = snapshots.pair(store)
    pd.testing.assert_frame_equal(tables.cohort_changes(first, second),
                                  tables.cohort_changes(profiles(BEFORE), profiles(AFTER)))
    pd.testing.assert_frame_equal(tables.computation_changes(first, second),
                                  tables.computation_changes(profiles(BEFORE), profiles(AFTER)))
    empty = tables.cohort_changes([], [])
    assert list(empty.columns) == list(tables.COHORT_CHANGE_COLUMNS) and empty.empty
    assert tables.computation_changes([], profiles(AFTER)).empty
    with pytest.raises(ValueError, match=r"cohort_changes\(\): missing column\(s\) 'cohort_id'"):
        tables.cohort_changes(pd.DataFrame({"user_id": ["a"], "device_id": ["b"]}), tables.cohorts(profiles(AFTER)))


def test_changes_of_many_users_match_python_sets():
    rng = np.random.default_rng(0)
    n = 20_000
    users = [f"u{i}" for i in range(n)]
    before = pd.DataFrame({"user_id": pd.array(np.repeat(users, 2), dtype="str"),
                           "device_id": pd.array(np.repeat(users, 2), dtype="str"),
                           "cohort_id": pd.Categorical(rng.choice(["a", "b", "c"], 2 * n))})
    after = before.sample(frac=0.9, random_state=1).sort_index()
    changes = tables.cohort_changes(before, after)
    old = set(before.itertuples(index=False, name=None))
    new = set(after.itertuples(index=False, name=None))
    present = {row[:2] for row in new}  # every user of `after` is in `before` too
    expected = {(u, c, "left") for u, d, c in old - new if (u, d) in present}
    expected |= {(u, c, "stayed") for u, d, c in old & new}
    assert {(r.user_id, r.cohort_id, r.change) for r in changes.itertuples(index=False)} == expected
