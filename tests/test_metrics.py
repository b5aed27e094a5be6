"""Tests for amptools.metrics: list metrics against hand computations, table metrics
against independent pandas computations."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amptools import metrics

RECOMMENDATION_COLUMNS = list(metrics.RECOMMENDATION_COLUMNS)


def make_recs(lists: dict[tuple[str, str], list[str]], *, source: dict[str, str] | None = None,
              control: set[tuple[str, str]] = frozenset()) -> pd.DataFrame:
    """A recommendations table in the tables.recommendations schema.

    ``lists`` maps (user_id, rec_id) to the ordered items; device_id is "d-<user>".
    """
    rows = []
    for (user, rec_id), items in lists.items():
        for rank, item in enumerate(items, start=1):
            rows.append({
                "user_id": user, "device_id": f"d-{user}", "rec_id": rec_id, "child_rec_id": rec_id,
                "recommendation_source": (source or {}).get(rec_id, f"model-{rec_id}"),
                "is_control": (user, rec_id) in control,
                "last_updated": pd.Timestamp("2024-01-01", tz="UTC"), "rank": rank, "item": item,
            })
    frame = pd.DataFrame(rows, columns=RECOMMENDATION_COLUMNS)
    for column in ("rec_id", "child_rec_id", "recommendation_source", "item"):
        # an unused category must never show up in results
        frame[column] = pd.Categorical(frame[column], categories=[*pd.unique(frame[column]), "unused"])
    frame["is_control"] = frame["is_control"].astype(bool)
    frame["rank"] = frame["rank"].astype("int64")
    frame["last_updated"] = pd.to_datetime(frame["last_updated"], utc=True)
    return frame


def random_recs(n_users: int, *, n_sets: int = 3, k: int = 10, n_items: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lists = {}
    for user in range(n_users):
        for s in range(n_sets):
            items = rng.choice(n_items, size=k, replace=False, p=None)
            lists[(f"u{user}", f"set{s}")] = [f"i{i}" for i in items]
    return make_recs(lists, source={"set0": "m1", "set1": "m2", "set2": "m2"})


# ---------------------------------------------------------------------------- jaccard / overlap


def test_jaccard_and_overlap_basic():
    assert metrics.jaccard("abc", "bcd") == pytest.approx(2 / 4)
    assert metrics.jaccard(["a", "a", "b"], ["b", "a"]) == 1.0  # duplicates ignored
    assert metrics.jaccard([], []) == 1.0 and metrics.jaccard([], ["a"]) == 0.0
    assert metrics.jaccard("abcd", "abxy", k=2) == 1.0
    assert metrics.overlap("ab", "abcd") == 1.0  # |A∩B| / min size
    assert metrics.overlap("abcd", "abxy") == 0.5
    assert metrics.overlap("abcd", "axby", k=2) == 0.5  # top-2: {a,b} vs {a,x}
    assert metrics.overlap([], []) == 1.0 and metrics.overlap([], "a") == 0.0
    with pytest.raises(ValueError, match="k must be"):
        metrics.jaccard("a", "b", k=0)


# ---------------------------------------------------------------------------- rbo


def test_rbo_uneven_matches_hand_computation():
    # S = [a, b, c] (s = 3), L = [b, a, d, c, e] (l = 5), p = 1/2, so (1-p)/p = 1.
    # X_d: d=1 {a}∩{b}=0; d=2 {a,b}∩{b,a}=2; d=3 {a,b,c}∩{b,a,d}=2 (= X_s);
    #      d>s compares all of S with L's prefix: d=4 {a,b,c}∩{b,a,d,c}=3; d=5: 3 (= X_l).
    # sum_d X_d/d p^d        = 0 + 2/2·1/4 + 2/3·1/8 + 3/4·1/16 + 3/5·1/32
    # sum_{d=4,5} X_s(d-s)/(s d) p^d = 2·1/(3·4)·1/16 + 2·2/(3·5)·1/32
    # ((X_l - X_s)/l + X_s/s) p^l    = (1/5 + 2/3)·1/32
    p = Fraction(1, 2)
    first = 0 + Fraction(2, 2) * p**2 + Fraction(2, 3) * p**3 + Fraction(3, 4) * p**4 + Fraction(3, 5) * p**5
    second = Fraction(2 * 1, 3 * 4) * p**4 + Fraction(2 * 2, 3 * 5) * p**5
    third = (Fraction(3 - 2, 5) + Fraction(2, 3)) * p**5
    expected = (1 - p) / p * (first + second) + third
    assert metrics.rbo("abc", "badce", p=0.5) == pytest.approx(float(expected), abs=1e-12)
    assert metrics.rbo("badce", "abc", p=0.5) == pytest.approx(float(expected), abs=1e-12)


def test_rbo_even_matches_hand_computation():
    # Equal lengths (eq. 30): S = [a, b, c], L = [a, c, b], p = 0.9.
    # X_1 = 1, X_2 = |{a,b}∩{a,c}| = 1, X_3 = 3.
    # RBO = (1-p)/p (1/1·p + 1/2·p² + 3/3·p³) + 3/3·p³
    p = 0.9
    expected = (1 - p) / p * (1 * p + 0.5 * p**2 + 1 * p**3) + p**3
    assert metrics.rbo("abc", "acb", p=p) == pytest.approx(expected, abs=1e-12)


def test_rbo_properties():
    assert metrics.rbo(list("abcdefgh"), list("abcdefgh")) == pytest.approx(1.0)
    assert metrics.rbo("abc", "xyz") == 0.0
    assert metrics.rbo([], []) == 1.0 and metrics.rbo([], "a") == 0.0
    # top-weighted: swapping the first two costs more than swapping the last two
    base = list("abcdefghij")
    top_swap = ["b", "a", *base[2:]]
    bottom_swap = [*base[:-2], "j", "i"]
    assert metrics.rbo(base, top_swap) < metrics.rbo(base, bottom_swap) < 1.0
    # a prefix of a list is highly similar but, extrapolated, exactly 1 (agreement 1 at every depth)
    assert metrics.rbo(base[:5], base) == pytest.approx(1.0)
    # duplicates after the first occurrence are ignored
    assert metrics.rbo(["a", "a", "b"], ["a", "b"]) == pytest.approx(1.0)


@pytest.mark.parametrize("p", [0, 1, -0.1, 1.5, "0.9", True])
def test_rbo_rejects_bad_p(p):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        metrics.rbo("ab", "ab", p=p)


item_lists = st.lists(st.sampled_from(list("abcdefghijkl")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(item_lists, item_lists, st.floats(min_value=0.01, max_value=0.99))
def test_rbo_bounded_and_symmetric(a, b, p):
    value = metrics.rbo(a, b, p=p)
    assert 0.0 <= value <= 1.0
    assert value == pytest.approx(metrics.rbo(b, a, p=p), abs=1e-12)
    assert 0.0 <= metrics.jaccard(a, b) <= 1.0 and metrics.jaccard(a, b) == metrics.jaccard(b, a)
    assert 0.0 <= metrics.overlap(a, b) <= 1.0 and metrics.overlap(a, b) == metrics.overlap(b, a)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(item_lists, item_lists), min_size=1, max_size=6), st.floats(0.05, 0.95))
def test_overlap_matrix_rbo_equals_mean_of_scalar_rbo(pairs, p):
    """The vectorised closed form agrees with the literal eq. 32 loop."""
    lists = {}
    for n, (a, b) in enumerate(pairs):
        if a:
            lists[(f"u{n}", "A")] = a
        if b:
            lists[(f"u{n}", "B")] = b
    recs = make_recs(lists)
    if recs["rec_id"].nunique() < 2:
        return
    result = metrics.overlap_matrix(recs, metric="rbo", p=p)
    shared = [(a, b) for a, b in pairs if a and b]
    expected = np.mean([metrics.rbo(a, b, p=p) for a, b in shared]) if shared else np.nan
    assert result.loc["A", "B"] == pytest.approx(expected, abs=1e-9, nan_ok=True)


# ---------------------------------------------------------------------------- overlap_matrix


def test_overlap_matrix_literal():
    recs = make_recs({
        ("u1", "A"): ["a", "b", "c"], ("u1", "B"): ["a", "b", "d"],
        ("u2", "A"): ["x", "y"], ("u2", "B"): ["z"],
        ("u3", "A"): ["a"], ("u3", "C"): ["a"],
    })
    result = metrics.overlap_matrix(recs, by="rec_id", metric="jaccard")
    counts = metrics.overlap_counts(recs, by="rec_id")
    assert list(result.index) == ["A", "B", "C"] and list(result.columns) == ["A", "B", "C"]
    # u1: 2/4, u2: 0/3 -> mean 0.25
    assert result.loc["A", "B"] == pytest.approx(0.25)
    assert result.loc["A", "C"] == 1.0
    assert np.isnan(result.loc["B", "C"])  # nobody has both
    assert np.diag(result.to_numpy()).tolist() == [1.0, 1.0, 1.0]
    assert counts.loc["A", "B"] == 2 and counts.loc["B", "C"] == 0 and counts.loc["A", "A"] == 3
    assert result.attrs["n_users"].equals(counts) and counts.dtypes.eq("int64").all()
    over = metrics.overlap_matrix(recs, metric="overlap")
    assert over.loc["A", "B"] == pytest.approx((2 / 3 + 0) / 2)
    top1 = metrics.overlap_matrix(recs, metric="jaccard", k=1)
    assert top1.loc["A", "B"] == pytest.approx((1 + 0) / 2)


def test_overlap_matrix_by_other_columns_and_random_against_scalar():
    recs = random_recs(60, n_items=30, seed=1)
    for metric, function in [("jaccard", metrics.jaccard), ("overlap", metrics.overlap), ("rbo", metrics.rbo)]:
        result = metrics.overlap_matrix(recs, metric=metric)
        lists = {key: group.sort_values("rank")["item"].tolist()
                 for key, group in recs.groupby(["user_id", "rec_id"], observed=True)}
        users = recs["user_id"].unique()
        for a, b in itertools.combinations(["set0", "set1", "set2"], 2):
            expected = np.mean([function(lists[(u, a)], lists[(u, b)]) for u in users])
            assert result.loc[a, b] == pytest.approx(expected, abs=1e-12)
    by_model = metrics.overlap_matrix(recs, by="recommendation_source")
    assert list(by_model.index) == ["m1", "m2"]  # unused categories not shown
    by_control = metrics.overlap_matrix(recs, by="is_control")
    assert list(by_control.index) == [False]


def test_overlap_matrix_errors_and_empty():
    recs = make_recs({("u1", "A"): ["a"]})
    with pytest.raises(ValueError, match="missing column.*'nope'"):
        metrics.overlap_matrix(recs, by="nope")
    with pytest.raises(ValueError, match="metric"):
        metrics.overlap_matrix(recs, metric="cosine")
    empty = metrics.overlap_matrix(recs.iloc[:0])
    assert empty.shape == (0, 0)


# ---------------------------------------------------------------------------- coverage


def test_coverage_literal():
    recs = make_recs({
        ("u1", "A"): ["a", "b"], ("u2", "A"): ["a", "c"],
        ("u1", "B"): ["a", "a"],  # duplicate ignored
    }, source={"A": "m1", "B": "m2"})
    result = metrics.coverage(recs, catalog=["a", "b", "c", "d"])
    assert list(result.columns) == list(metrics.COVERAGE_COLUMNS)
    overall = result.iloc[0]
    assert (overall["group_by"], overall["group"]) == ("overall", "all")
    assert overall["n_users"] == 2 and overall["n_lists"] == 3 and overall["n_recommendations"] == 5
    assert overall["coverage"] == pytest.approx(3 / 4)
    counts = np.array([0, 1, 1, 3])  # d, b, c, a over the catalog
    n = 4
    gini = sum((2 * i - n - 1) * x for i, x in enumerate(sorted(counts), start=1)) / (n * counts.sum())
    assert overall["gini"] == pytest.approx(gini)
    shares = counts[counts > 0] / counts.sum()
    assert overall["entropy"] == pytest.approx(-(shares * np.log(shares)).sum() / math.log(4))
    per_model = result.set_index("group").loc[["m1", "m2"]]
    assert per_model["n_items"].tolist() == [3, 1]
    assert set(result["group_by"]) == {"overall", "recommendation_source"}
    # items outside the catalog are counted, not covered
    outside = metrics.coverage(recs, catalog=["a"], by=None)
    assert len(outside) == 1 and outside.loc[0, "n_items_outside_catalog"] == 2
    assert outside.loc[0, "coverage"] == 1.0
    # even recommendations: gini 0, entropy 1
    even = metrics.coverage(make_recs({("u1", "A"): ["a", "b"], ("u2", "A"): ["c", "d"]}), by=None)
    assert even.loc[0, "gini"] == pytest.approx(0.0) and even.loc[0, "entropy"] == pytest.approx(1.0)


def test_coverage_empty_keeps_columns():
    result = metrics.coverage(make_recs({("u1", "A"): ["a"]}).iloc[:0])
    assert list(result.columns) == list(metrics.COVERAGE_COLUMNS) and len(result) == 1
    assert np.isnan(result.loc[0, "coverage"])


# ---------------------------------------------------------------------------- item frequency, popularity, long tail


def test_item_frequency_against_pandas():
    recs = random_recs(50, n_items=20, seed=3)
    result = metrics.item_frequency(recs, by="rec_id")
    assert list(result.columns) == ["rec_id", *metrics.ITEM_FREQUENCY_COLUMNS]
    expected = recs.groupby(["rec_id", "item"], observed=True).size()
    got = result.set_index(["rec_id", "item"])["n_lists"]
    assert got.sort_index().to_dict() == {k: v for k, v in expected.items() if v > 0}
    assert result["share_of_lists"].max() <= 1.0
    top = metrics.item_frequency(recs, by="rec_id", top_n=3)
    assert top.groupby("rec_id", observed=True).size().tolist() == [3, 3, 3]


def test_popularity_and_long_tail():
    recs = make_recs({
        ("u1", "A"): ["a", "b"], ("u2", "A"): ["a", "c"], ("u3", "A"): ["a", "b"],
        ("u1", "B"): ["d", "e"], ("u2", "B"): ["f", "g"],
    }, source={"A": "m1", "B": "m2"})
    result = metrics.popularity(recs)
    assert list(result.columns) == ["recommendation_source", *metrics.POPULARITY_COLUMNS]
    m1 = result.set_index("recommendation_source").loc["m1"]
    # m1 counts: a 3, b 2, c 1 -> top 20 % of 3 items = 1 item (a) -> 3 / 6
    assert m1["top_share"] == pytest.approx(0.5)
    # global popularity ranks: a 1, b 2, then c, d, e, f, g tie at 3
    assert m1["mean_popularity_rank"] == pytest.approx((3 * 1 + 2 * 2 + 1 * 3) / 6)
    curve = metrics.long_tail(recs)
    m1_curve = curve[curve["recommendation_source"] == "m1"]
    assert m1_curve["cumulative_share"].tolist() == pytest.approx([3 / 6, 5 / 6, 1.0])
    assert m1_curve["item_rank"].tolist() == [1, 2, 3]
    assert m1_curve["item_fraction"].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0])
    with pytest.raises(ValueError, match="top_fraction"):
        metrics.popularity(recs, top_fraction=0)


# ---------------------------------------------------------------------------- personalization


def naive_personalization(lists: list[list[str]]) -> float:
    items = sorted({i for one in lists for i in one})
    position = {item: n for n, item in enumerate(items)}
    matrix = np.zeros((len(lists), len(items)))
    for row, one in enumerate(lists):
        matrix[row, [position[i] for i in set(one)]] = 1
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    cosine = unit @ unit.T
    n = len(lists)
    return 1 - (cosine.sum() - np.trace(cosine)) / (n * (n - 1))


def test_personalization_matches_pairwise():
    rng = np.random.default_rng(5)
    lists = [[f"i{x}" for x in rng.choice(40, size=rng.integers(1, 12), replace=False)] for _ in range(300)]
    assert metrics.personalization_score(lists) == pytest.approx(naive_personalization(lists), abs=1e-12)
    assert metrics.personalization_score([["a", "b"], ["a", "b"]]) == pytest.approx(0.0)
    assert metrics.personalization_score([["a"], ["b"]]) == pytest.approx(1.0)
    assert math.isnan(metrics.personalization_score([["a"]]))
    assert math.isnan(metrics.personalization_score([]))


def test_personalization_per_rec_set():
    recs = random_recs(80, n_items=25, seed=7)
    result = metrics.personalization(recs)
    assert isinstance(result, pd.Series) and result.name == "personalization"
    assert list(result.index) == ["set0", "set1", "set2"]
    for rec_id, value in result.items():
        sub = recs[recs["rec_id"] == rec_id]
        lists = [g.sort_values("rank")["item"].tolist() for _, g in sub.groupby("user_id", observed=True)]
        assert value == pytest.approx(naive_personalization(lists), abs=1e-12)
    pooled = metrics.personalization_score(recs)
    all_lists = [g["item"].tolist() for _, g in recs.groupby(["user_id", "rec_id"], observed=True)]
    assert pooled == pytest.approx(naive_personalization(all_lists), abs=1e-12)
    by_model = metrics.personalization(recs, by="recommendation_source")
    assert list(by_model.index) == ["m1", "m2"]
    with pytest.raises(ValueError, match="missing column"):
        metrics.personalization(recs.drop(columns="item"))


def test_metrics_do_not_change_input():
    recs = random_recs(20, seed=2)
    before = recs.copy()
    metrics.overlap_matrix(recs, metric="rbo")
    metrics.coverage(recs)
    metrics.popularity(recs)
    metrics.long_tail(recs)
    metrics.personalization(recs)
    pd.testing.assert_frame_equal(recs, before)


def _as_plain(recs: pd.DataFrame) -> pd.DataFrame:
    """The same table with every categorical / str column as plain Python objects."""
    return recs.astype({c: object for c in recs.columns if c not in ("rank", "last_updated")})


def _as_table_dtypes(recs: pd.DataFrame) -> pd.DataFrame:
    """The same table with amptools.tables' dtypes: str ids, nullable boolean control."""
    return recs.astype({"user_id": "str", "device_id": "str", "is_control": "boolean"})


def _messy_recs(seed: int = 3) -> pd.DataFrame:
    """Shuffled rows, repeated items inside lists, missing ids and a missing control flag."""
    recs = random_recs(40, n_sets=3, k=6, n_items=15, seed=seed)
    rng = np.random.default_rng(seed)
    recs = recs.iloc[rng.permutation(len(recs))].reset_index(drop=True)
    recs.loc[rng.random(len(recs)) < 0.1, "item"] = recs["item"].iloc[0]  # repeats within lists
    recs["user_id"] = recs["user_id"].astype(object)
    recs.loc[recs["user_id"] == recs["user_id"].iloc[1], "user_id"] = None
    recs["is_control"] = recs["is_control"].astype("boolean")
    recs.loc[recs.index[:7], "is_control"] = pd.NA
    return recs


def _missing_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    """NaN and pd.NA group labels both mean "missing": spell them None to compare."""
    def relabel(index: pd.Index) -> pd.Index:
        return pd.Index([None if pd.isna(v) else v for v in index], dtype=object, name=index.name)
    return frame.set_axis(relabel(frame.index), axis=0).set_axis(relabel(frame.columns), axis=1)


@pytest.mark.parametrize("variant", [_as_plain, _as_table_dtypes])
@pytest.mark.parametrize("messy", [False, True])
def test_table_metrics_do_not_depend_on_dtypes(variant, messy):
    recs = _messy_recs() if messy else random_recs(60, n_sets=3, k=8, n_items=30, seed=5)
    other = variant(recs)
    for by in ("rec_id", "recommendation_source", "is_control"):
        for metric in ("jaccard", "overlap", "rbo"):
            left = [_missing_as_none(f) for f in (metrics.overlap_matrix(recs, by=by, metric=metric),
                                                  metrics.overlap_counts(recs, by=by))]
            right = [_missing_as_none(f) for f in (metrics.overlap_matrix(other, by=by, metric=metric),
                                                   metrics.overlap_counts(other, by=by))]
            pd.testing.assert_frame_equal(left[0], right[0], check_index_type=False, check_column_type=False,
                                          check_names=True, rtol=0, atol=1e-15)
            pd.testing.assert_frame_equal(left[1], right[1], check_index_type=False, check_column_type=False)
    for by in (None, "rec_id", ["rec_id", "is_control"]):
        left, right = metrics.item_frequency(recs, by=by), metrics.item_frequency(other, by=by)
        as_objects = {c: object for c in left.columns if c in ("item", "rec_id", "is_control")}
        pd.testing.assert_frame_equal(left.astype(as_objects), right.astype(as_objects), check_dtype=False)
        assert left["n_lists"].sum() == right["n_lists"].sum()
    as_objects = {"recommendation_source": object, "item": object}
    pd.testing.assert_frame_equal(metrics.long_tail(recs).astype(as_objects), metrics.long_tail(other).astype(as_objects))
    pd.testing.assert_series_equal(metrics.personalization(recs), metrics.personalization(other),
                                   check_index_type=False, check_index=False)


def test_overlap_matrix_messy_rows_against_scalar_metrics():
    """Shuffled rows, repeated items and a missing user id still give the per-user mean."""
    recs = _messy_recs(seed=11)
    result = metrics.overlap_matrix(recs, by="rec_id", metric="rbo", p=0.8)
    keys = recs["user_id"].astype(object).where(recs["user_id"].notna(), None).map(repr) + "|" + recs["device_id"].astype(str)
    ordered = recs.assign(_user=keys.to_numpy()).sort_values("rank", kind="stable")
    lists = {key: list(group["item"].astype(object)) for key, group in ordered.groupby(["_user", "rec_id"], observed=True)}
    sets = list(result.index)
    for a, b in itertools.combinations(sets, 2):
        users = sorted({u for u, r in lists if r == a} & {u for u, r in lists if r == b})
        expected = np.mean([metrics.rbo(lists[(u, a)], lists[(u, b)], p=0.8) for u in users])
        assert result.loc[a, b] == pytest.approx(expected, abs=1e-12)


def test_old_spellings_still_work_with_a_deprecation_warning():
    recs = random_recs(30, seed=4)
    with pytest.warns(DeprecationWarning, match=r"^amptools\.metrics\.overlap_matrix\(\): pass by=, metric= by keyword"):
        old = metrics.overlap_matrix(recs, "recommendation_source", "rbo")
    pd.testing.assert_frame_equal(old, metrics.overlap_matrix(recs, by="recommendation_source", metric="rbo"))
    with pytest.warns(DeprecationWarning, match="return_counts=True is deprecated.*overlap_counts"):
        values, counts = metrics.overlap_matrix(recs, return_counts=True)
    pd.testing.assert_frame_equal(counts, metrics.overlap_counts(recs))
    with pytest.warns(DeprecationWarning, match=r"coverage\(\): pass catalog= by keyword"):
        old = metrics.coverage(recs, ["i1", "i2"])
    pd.testing.assert_frame_equal(old, metrics.coverage(recs, catalog=["i1", "i2"]))
    with pytest.warns(DeprecationWarning, match="by="):
        pd.testing.assert_frame_equal(metrics.long_tail(recs, "rec_id"), metrics.long_tail(recs, by="rec_id"))
    with pytest.warns(DeprecationWarning, match="by="):
        pd.testing.assert_frame_equal(metrics.popularity(recs, "rec_id"), metrics.popularity(recs, by="rec_id"))
    with pytest.warns(DeprecationWarning, match="k="):
        assert metrics.jaccard("abcd", "abxy", 2) == 1.0
    with pytest.warns(DeprecationWarning, match="p="):
        assert metrics.rbo("abc", "acb", 0.5) == metrics.rbo("abc", "acb", p=0.5)
    # calls that returned a float keep returning it, with a warning pointing at personalization_score
    with pytest.warns(DeprecationWarning, match="personalization_score"):
        assert metrics.personalization([["a"], ["b"]]) == 1.0
    with pytest.warns(DeprecationWarning, match="personalization_score"):
        assert metrics.personalization(recs, by=None) == metrics.personalization_score(recs)
    with pytest.raises(TypeError, match="multiple values for by"):
        metrics.long_tail(recs, "rec_id", by="rec_id")
    with pytest.raises(TypeError, match="positional"):
        metrics.long_tail(recs, "rec_id", "extra")


def test_keyword_only_after_the_data_and_one_return_type():
    import inspect
    for name in metrics.__all__:
        function = getattr(metrics, name)
        if not callable(function):
            continue
        parameters = list(inspect.signature(function).parameters.values())
        positional = [p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        assert positional in (["recs"], ["a", "b"], ["before", "after"]), (name, positional)
    recs = random_recs(30, seed=4)
    assert isinstance(metrics.personalization(recs, by="recommendation_source"), pd.Series)
    assert isinstance(metrics.personalization_score(recs), float)
    assert isinstance(metrics.overlap_matrix(recs, metric="rbo"), pd.DataFrame)
