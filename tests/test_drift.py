"""metrics.drift, drift_summary and item_churn against plain per-user Python computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from amptools import metrics


def random_recs(seed: int, n_users: int = 60, sets=("home", "email"), catalog: int = 15,
                drop_share: float = 0.1, repeat_share: float = 0.1) -> pd.DataFrame:
    """A recommendations table with uneven lists, repeated items and users missing a set."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(n_users):
        for rec_id in sets:
            if rng.random() < drop_share:
                continue
            length = int(rng.integers(0, 9))
            items = [f"i{int(x)}" for x in rng.integers(0, catalog, length)]
            if items and rng.random() < repeat_share:
                items.insert(int(rng.integers(0, len(items))), items[0])
            for rank, item in enumerate(items, start=1):
                rows.append({"user_id": f"u{user}", "device_id": f"d{user % 7}", "rec_id": rec_id,
                             "rank": rank, "item": item})
    frame = pd.DataFrame(rows, columns=["user_id", "device_id", "rec_id", "rank", "item"])
    return frame.astype({"user_id": "str", "device_id": "str", "rec_id": "category", "item": "category"})


def lists_of(recs: pd.DataFrame) -> dict[tuple[str, str, str], list[str]]:
    """Each (user, device, set)'s items in rank order, the Python way."""
    out: dict[tuple[str, str, str], list[str]] = {}
    for row in recs.sort_values("rank", kind="stable").itertuples(index=False):
        out.setdefault((row.user_id, row.device_id, str(row.rec_id)), []).append(str(row.item))
    return out


def distinct(items: list[str], k: int | None) -> list[str]:
    return list(dict.fromkeys(items))[:k]


@pytest.mark.parametrize("seed,k", [(0, None), (1, 3), (2, None), (3, 1)])
def test_drift_matches_the_list_metrics_user_by_user(seed, k):
    before, after = random_recs(seed), random_recs(seed + 100)
    old, new = lists_of(before), lists_of(after)
    result = metrics.drift(before, after, k=k)
    assert list(result.columns) == ["user_id", "device_id", "rec_id", *metrics.DRIFT_COLUMNS]
    both = sorted(set(old) & set(new))
    assert len(result) == len(both) > 0
    got = {(r.user_id, r.device_id, str(r.rec_id)): r for r in result.itertuples(index=False)}
    assert set(got) == set(both)
    for key in both:
        a, b = distinct(old[key], k), distinct(new[key], k)
        row = got[key]
        assert (row.n_before, row.n_after) == (len(a), len(b)), key
        assert row.jaccard == pytest.approx(metrics.jaccard(a, b), abs=1e-12), key
        assert row.rbo == pytest.approx(metrics.rbo(a, b), abs=1e-12), key
        assert (row.n_added, row.n_removed) == (len(set(b) - set(a)), len(set(a) - set(b))), key
        assert row.top_changed == ((a[:1] or [None]) != (b[:1] or [None])), key
        assert row.changed == (a != b), key
    assert result["jaccard"].dtype == "float64" and result["n_added"].dtype == "int64"
    assert result["top_changed"].dtype == bool


def test_drift_of_a_table_with_itself_is_no_change():
    recs = random_recs(5)
    result = metrics.drift(recs, recs.sample(frac=1.0, random_state=1))  # row order does not matter
    assert (result["jaccard"] == 1.0).all() and (result["rbo"] == 1.0).all()
    assert not result["changed"].any() and (result["n_added"] == 0).all()


def test_drift_summary_counts_users_in_one_snapshot_only():
    before, after = random_recs(7), random_recs(8)
    old, new = lists_of(before), lists_of(after)
    summary = metrics.drift_summary(before, after)
    assert list(summary.columns) == ["rec_id", *metrics.DRIFT_SUMMARY_COLUMNS]
    for row in summary.itertuples(index=False):
        mine_old = {key for key in old if key[2] == row.rec_id}
        mine_new = {key for key in new if key[2] == row.rec_id}
        both = mine_old & mine_new
        assert (row.n_users_before, row.n_users_after, row.n_users_compared) == (len(mine_old), len(mine_new), len(both))
        assert (row.n_users_only_before, row.n_users_only_after) == (len(mine_old - both), len(mine_new - both))
        assert row.n_users_only_before > 0 or row.n_users_only_after > 0
        pairs = [(distinct(old[key], None), distinct(new[key], None)) for key in both]
        assert row.share_changed == pytest.approx(np.mean([a != b for a, b in pairs]))
        assert row.mean_jaccard == pytest.approx(np.mean([metrics.jaccard(a, b) for a, b in pairs]))
        assert row.mean_rbo == pytest.approx(np.mean([metrics.rbo(a, b) for a, b in pairs]))
        items_old = {item for key in mine_old for item in old[key]}
        items_new = {item for key in mine_new for item in new[key]}
        assert (row.n_items_before, row.n_items_after) == (len(items_old), len(items_new))
        assert (row.n_items_entered, row.n_items_left) == (len(items_new - items_old), len(items_old - items_new))


def test_item_churn_counts_who_gained_and_lost_each_item():
    before, after = random_recs(11), random_recs(12)
    old, new = lists_of(before), lists_of(after)
    churn = metrics.item_churn(before, after, k=4)
    assert list(churn.columns) == ["rec_id", *metrics.ITEM_CHURN_COLUMNS]
    expected: dict[tuple[str, str], dict[str, list]] = {}
    for key in set(old) & set(new):
        a, b = distinct(old[key], 4), distinct(new[key], 4)
        for item in set(a) | set(b):
            cell = expected.setdefault((key[2], item), {"before": [], "after": [], "stayed": []})
            if item in a:
                cell["before"].append(a.index(item) + 1)
            if item in b:
                cell["after"].append(b.index(item) + 1)
            if item in a and item in b:
                cell["stayed"].append((a.index(item) + 1, b.index(item) + 1))
    got = {(str(r.rec_id), r.item): r for r in churn.itertuples(index=False)}
    assert set(got) == set(expected)
    for key, cell in expected.items():
        row = got[key]
        stayed = len(cell["stayed"])
        assert (row.n_before, row.n_after, row.n_stayed) == (len(cell["before"]), len(cell["after"]), stayed), key
        assert (row.n_entered, row.n_left) == (len(cell["after"]) - stayed, len(cell["before"]) - stayed), key
        if stayed:
            assert row.mean_rank_before == pytest.approx(np.mean([x for x, _ in cell["stayed"]]))
            assert row.mean_shift == pytest.approx(np.mean([y - x for x, y in cell["stayed"]]))
        else:
            assert np.isnan(row.mean_rank_before)
    churn_total = churn["n_entered"] + churn["n_left"]
    for _, group in churn.groupby("rec_id", observed=True):
        values = (group["n_entered"] + group["n_left"]).to_numpy()
        assert (np.diff(values) <= 0).all()  # most churn first
    assert churn_total.sum() > 0


def test_drift_checks_its_input():
    recs = random_recs(1)
    with pytest.raises(ValueError, match=r"drift\(\): missing column\(s\) 'rank'"):
        metrics.drift(recs, recs.drop(columns="rank"))
    with pytest.raises(ValueError, match="k must be a whole number"):
        metrics.drift(recs, recs, k=0)
    with pytest.raises(ValueError, match="p must be a number strictly between 0 and 1"):
        metrics.drift_summary(recs, recs, p=1.0)
    with pytest.raises(TypeError, match="expects a pandas DataFrame"):
        metrics.drift(recs, [])


def test_drift_of_empty_tables_has_the_columns():
    empty = random_recs(1).iloc[:0]
    assert list(metrics.drift(empty, empty).columns) == ["user_id", "device_id", "rec_id", *metrics.DRIFT_COLUMNS]
    summary = metrics.drift_summary(empty, random_recs(2))
    assert (summary["n_users_before"] == 0).all() and (summary["n_users_only_after"] == summary["n_users_after"]).all()
    assert summary["share_changed"].isna().all()
