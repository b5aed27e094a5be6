"""Tests for amptools.tables: columns, dtypes, the documented fixtures, edge cases."""

from __future__ import annotations

from dataclasses import replace

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from amptools import tables
from amptools.bulk import Outcome, ProfileSet
from amptools.models import UserProfile
from amptools.query import ProfileQuery

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
NAMES = ("one_rec", "two_recs", "user_properties", "cohort_ids", "one_computation", "all_computations")
QUERIES = {
    "one_rec": ProfileQuery(recs=("testRecId",)),
    "two_recs": ProfileQuery(recs=("testRecId", "testRecId2")),
    "user_properties": ProfileQuery(amp_props=True),
    "cohort_ids": ProfileQuery(cohort_ids=True),
    "one_computation": ProfileQuery(computations=("computed-prop-2",)),
    "all_computations": ProfileQuery(computations=True),
}


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"{name}.json").read_text(encoding="utf-8"))


def profile(name: str) -> UserProfile:
    return UserProfile.from_json(sample(name), QUERIES[name])


def payload(user_id: str = "u1", **data: Any) -> dict[str, Any]:
    body = {"recommendations": None, "user_id": user_id, "device_id": f"d-{user_id}",
            "amp_props": None, "cohort_ids": None}
    body.update(data)
    return {"userData": body}


class StandInProfileSet:
    """A duck-typed ProfileSet: .profiles and .failures."""

    def __init__(self, profiles: list[UserProfile], failures: pd.DataFrame) -> None:
        self.profiles = profiles
        self.failures = failures


ALL_TABLES = {
    "recommendations": (tables.recommendations, tables.RECOMMENDATION_COLUMNS, tables.RECOMMENDATION_DTYPES),
    "cohorts": (tables.cohorts, tables.COHORT_COLUMNS, tables.COHORT_DTYPES),
    "computations": (tables.computations, tables.COMPUTATION_COLUMNS, tables.COMPUTATION_DTYPES),
    "propensities": (tables.propensities, tables.PROPENSITY_COLUMNS, tables.PROPENSITY_DTYPES),
    "summary": (tables.summary, tables.SUMMARY_COLUMNS, tables.SUMMARY_DTYPES),
}


# -- columns and dtypes -------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ALL_TABLES))
@pytest.mark.parametrize("empty", [[], (), StandInProfileSet([], pd.DataFrame())])
def test_empty_input_keeps_columns_and_dtypes(name: str, empty: Any) -> None:
    function, columns, dtypes = ALL_TABLES[name]
    frame = function(empty)
    assert tuple(frame.columns) == columns
    assert len(frame) == 0
    for column in columns:
        assert frame[column].dtype == dtypes[column], column


@pytest.mark.parametrize("name", sorted(ALL_TABLES))
def test_dtypes_equal_for_empty_and_full_input(name: str) -> None:
    function, columns, _ = ALL_TABLES[name]
    full = function([sample(n) for n in NAMES])
    empty = function([])
    assert tuple(full.columns) == columns
    for column in columns:
        if isinstance(full[column].dtype, pd.CategoricalDtype):
            assert isinstance(empty[column].dtype, pd.CategoricalDtype)
        else:
            assert full[column].dtype == empty[column].dtype, column


@pytest.mark.parametrize("function", [tables.properties, tables.cohort_matrix])
def test_wide_tables_empty(function: Any) -> None:
    frame = function([])
    assert list(frame.columns) == ["user_id", "device_id"]
    assert (frame.dtypes == "str").all()


def test_id_dtype_is_pandas_string() -> None:
    frame = tables.cohorts(sample("cohort_ids"))
    assert frame["user_id"].dtype == "str"
    assert isinstance(frame["user_id"].dtype, pd.StringDtype)


# -- recommendations ---------------------------------------------------------------------------
def test_recommendations_two_recs_exact() -> None:
    frame = tables.recommendations([sample("two_recs")])
    assert list(frame["item"]) == [
        "cookie", "cracker", "chocolate milk", "donut", "croissant",
        "bulgogi", "bibimbap", "kimchi", "croffles", "samgyeopsal",
    ]
    assert list(frame["rank"]) == [1, 2, 3, 4, 5] * 2
    assert list(frame["rec_id"]) == ["testRecId"] * 5 + ["testRecId2"] * 5
    assert list(frame["child_rec_id"]) == ["testRecId"] * 5 + ["testRecId2"] * 5
    assert list(frame["recommendation_source"]) == ["model"] * 5 + ["model2"] * 5
    assert not frame["is_control"].any()
    assert frame["last_updated"].iloc[0] == pd.Timestamp(1608670720, unit="s", tz="UTC")
    assert frame["last_updated"].iloc[5] == pd.Timestamp(1608670658, unit="s", tz="UTC")
    assert frame["last_updated"].dtype == tables.TIMESTAMP_DTYPE == "datetime64[us, UTC]"
    assert set(frame["user_id"]) == {"testUser"}
    assert set(frame["device_id"]) == {"ffff-ffff-ffff-ffff"}
    assert frame["rank"].dtype == np.int64


def test_recommendations_one_rec_and_none() -> None:
    frame = tables.recommendations([sample("one_rec"), sample("user_properties")])
    assert len(frame) == 5
    assert list(frame.columns) == list(tables.RECOMMENDATION_COLUMNS)


def test_is_control_missing_is_na_and_rows_follow_input_order() -> None:
    bodies = [
        payload("a", recommendations=[{"rec_id": "r", "items": ["x", "y"], "is_control": None}]),
        payload("b", recommendations=[{"rec_id": "r", "items": ["z"], "is_control": True,
                                       "last_updated": None}]),
    ]
    frame = tables.recommendations(bodies)
    assert list(frame["user_id"]) == ["a", "a", "b"]
    assert frame["is_control"].dtype == "boolean"
    assert frame["is_control"].isna().tolist() == [True, True, False]
    assert bool(frame["is_control"].iloc[2]) is True
    assert frame["last_updated"].isna().all()
    assert frame["child_rec_id"].isna().all()


def test_recommendation_categories_are_str() -> None:
    frame = tables.recommendations(sample("one_rec"))
    assert frame["item"].cat.categories.dtype == "str"


# -- properties --------------------------------------------------------------------------------
def test_properties_documented_fixture() -> None:
    frame = tables.properties(sample("user_properties"))
    assert list(frame.columns) == [
        "user_id", "device_id", "library", "first_used", "last_used",
        "number_property", "boolean_property",
    ]
    row = frame.iloc[0]
    assert row["library"] == "http/1.0"
    assert row["first_used"] == "2020-01-13"  # not parsed unless asked
    assert frame["number_property"].dtype == "Int64" and row["number_property"] == 12
    assert frame["boolean_property"].dtype == "boolean" and bool(row["boolean_property"])
    assert frame["library"].dtype == "str"


def test_properties_parse_dates() -> None:
    frame = tables.properties(sample("user_properties"), parse_dates=True)
    assert frame["first_used"].dtype == "datetime64[us, UTC]"
    assert frame["first_used"].iloc[0] == pd.Timestamp("2020-01-13", tz="UTC")
    assert frame["library"].dtype == "str"  # "http/1.0" is not a date


def test_properties_parse_dates_keeps_text_with_a_non_date() -> None:
    bodies = [payload("a", amp_props={"d": "2020-01-13"}), payload("b", amp_props={"d": "soon"})]
    frame = tables.properties(bodies, parse_dates=True)
    assert frame["d"].dtype == "str"
    assert list(frame["d"]) == ["2020-01-13", "soon"]


def test_properties_mixed_types_do_not_crash() -> None:
    bodies = [
        payload("a", amp_props={"mix": "text", "num": 1, "flag": True, "nested": [1, 2],
                                "big": 2**70, "frac": 1, "null": None}),
        payload("b", amp_props={"mix": 3, "num": 2.5, "flag": 1, "nested": {"k": "v"},
                                "big": 1, "frac": 2}),
        payload("c", amp_props={}),
        payload("d"),
    ]
    frame = tables.properties(bodies)
    assert frame["mix"].dtype == object and list(frame["mix"][:2]) == ["text", 3]
    assert frame["num"].dtype == "float64" and frame["num"].iloc[1] == 2.5
    assert frame["flag"].dtype == object  # booleans and numbers are not merged
    assert frame["flag"].iloc[0] is True and frame["flag"].iloc[1] == 1
    assert frame["nested"].iloc[0] == [1, 2] and frame["nested"].iloc[1] == {"k": "v"}
    assert frame["big"].iloc[0] == 2**70
    assert frame["frac"].dtype == "Int64"
    assert frame["null"].isna().all()
    assert frame.iloc[2:, 2:].isna().all().all()


def test_properties_strip_gp_collision_rule() -> None:
    bodies = [
        payload("a", amp_props={"x": 1, "gp:x": 2, "gp:y": "why", "gp:user_id": "u"}),
        payload("b", amp_props={"gp:z": True}),
    ]
    plain = tables.properties(bodies)
    assert list(plain.columns) == ["user_id", "device_id", "x", "gp:x", "gp:y", "gp:user_id", "gp:z"]
    stripped = tables.properties(bodies, strip_gp=True)
    # x exists, so gp:x keeps its prefix; gp:user_id would hide the id column.
    assert list(stripped.columns) == ["user_id", "device_id", "x", "gp:x", "y", "gp:user_id", "z"]
    assert stripped["x"].iloc[0] == 1 and stripped["gp:x"].iloc[0] == 2
    assert stripped["user_id"].iloc[0] == "a"


def test_properties_named_like_id_columns_are_renamed() -> None:
    frame = tables.properties(payload("a", amp_props={"user_id": "other", "device_id": "dev"}))
    assert list(frame.columns) == ["user_id", "device_id", "property:user_id", "property:device_id"]
    assert frame["user_id"].iloc[0] == "a" and frame["property:user_id"].iloc[0] == "other"


# -- computations and their separation from properties ----------------------------------------------
def test_computations_documented_fixtures() -> None:
    frame = tables.computations([profile("all_computations"), profile("one_computation")])
    assert list(frame["computation"]) == ["computed-prop-1", "computed-prop-2", "computed-prop-2"]
    assert list(frame["raw"]) == ["5000000.0", "3", "3"]
    assert list(frame["value"]) == [5000000.0, 3.0, 3.0]
    assert frame["value"].dtype == "float64" and frame["raw"].dtype == "str"


def test_computations_from_raw_dicts_need_the_query() -> None:
    query = ProfileQuery(computations=True)
    assert len(tables.computations(sample("all_computations"), query=query)) == 2
    # Without the query the API's merged amp_props cannot be told apart: no rows, no leak.
    assert len(tables.computations(sample("all_computations"))) == 0


def test_computation_values_that_do_not_parse_are_nan() -> None:
    query = ProfileQuery(computations=("a", "b", "c", "d"))
    body = payload("u", amp_props={"a": "n/a", "b": None, "c": "1e3", "d": "true"})
    frame = tables.computations(body, query=query)
    assert frame["value"].isna().tolist() == [True, True, False, True]
    assert frame["value"].iloc[2] == 1000.0
    assert frame["raw"].iloc[0] == "n/a" and pd.isna(frame["raw"].iloc[1])


def test_computations_and_properties_never_leak() -> None:
    query = ProfileQuery(amp_props=True, computations=("computed-prop-1",))
    body = payload("u", amp_props={"plan": "free", "computed-prop-1": "7"})
    parsed = UserProfile.from_json(body, query)
    props = tables.properties([parsed])
    comps = tables.computations([parsed])
    assert "computed-prop-1" not in props.columns and "plan" in props.columns
    assert list(comps["computation"]) == ["computed-prop-1"]
    # A profile built by hand: computations only come from .computations.
    hand = UserProfile(user_id="h", device_id=None, recommendations=None,
                       amp_props={"p": "1"}, computations={"c": "2"})
    assert list(tables.properties([hand]).columns) == ["user_id", "device_id", "p"]
    assert list(tables.computations([hand])["computation"]) == ["c"]


def test_split_payloads_keep_apart() -> None:
    query = ProfileQuery(amp_props=True, computations=True)
    main = payload("u", amp_props={"plan": "free"})
    comps = payload("u", amp_props={"orders": "3"})
    parsed = UserProfile.from_payloads([main, comps], query)
    assert list(tables.properties([parsed]).columns)[2:] == ["plan"]
    assert list(tables.computations([parsed])["computation"]) == ["orders"]


# -- cohorts -------------------------------------------------------------------------------------------
def test_cohorts_documented_fixture() -> None:
    frame = tables.cohorts(sample("cohort_ids"))
    assert list(frame["cohort_id"]) == ["cohort1", "cohort3", "cohort7"]
    assert frame["cohort_id"].dtype == "category"


def test_cohort_matrix_not_asked_vs_empty() -> None:
    bodies = [payload("a", cohort_ids=["c2", "c1"]), payload("b", cohort_ids=[]), payload("c")]
    frame = tables.cohort_matrix(bodies)
    assert list(frame.columns) == ["user_id", "device_id", "c1", "c2"]
    assert (frame.dtypes[2:] == "boolean").all()
    assert frame["c1"].tolist()[:2] == [True, False]
    assert frame["c1"].isna().tolist() == [False, False, True]
    chosen = tables.cohort_matrix(bodies, cohorts=["c9", "c2"])
    assert list(chosen.columns) == ["user_id", "device_id", "c9", "c2"]
    assert chosen["c9"].tolist()[:2] == [False, False]


# -- propensities ---------------------------------------------------------------------------------------
def test_propensities_list_and_single() -> None:
    body = payload("u", propensity=None, propensities=[
        {"prop": 0.5, "pred_id": "0x10x", "prop_type": "score"},
        {"prop": None, "pred_id": "nope", "prop_type": "score"},
    ])
    frame = tables.propensities(body)
    assert list(frame["prediction_id"]) == ["0x10x", "nope"]
    assert frame["value"].iloc[0] == 0.5 and np.isnan(frame["value"].iloc[1])
    single = tables.propensities(
        payload("u", propensity=0.25), query=ProfileQuery(predictions=("p1",), propensity_type="pct")
    )
    assert list(single["prediction_id"]) == ["p1"] and list(single["propensity_type"]) == ["pct"]


# -- summary ----------------------------------------------------------------------------------------------
def test_summary_not_asked_vs_asked_empty() -> None:
    bodies = [payload("a", cohort_ids=[], recommendations=[]), payload("b")]
    frame = tables.summary(bodies)
    assert frame["n_cohorts"].tolist()[0] == 0 and pd.isna(frame["n_cohorts"].iloc[1])
    assert frame["has_cohorts"].tolist() == [True, False]
    assert frame["n_recommendation_sets"].iloc[0] == 0
    assert pd.isna(frame["in_control"].iloc[0])


def test_summary_documented_fixtures() -> None:
    frame = tables.summary([profile(n) for n in NAMES])
    assert frame["n_items"].tolist()[:2] == [5, 10]
    assert frame["n_recommendation_sets"].tolist()[:2] == [1, 2]
    assert frame["n_properties"].iloc[2] == 5
    assert frame["n_cohorts"].iloc[3] == 3
    assert frame["n_computations"].tolist()[4:] == [1, 2]
    assert frame["in_control"].tolist()[:2] == [False, False]
    assert (frame["status"] == "ok").all()


def test_summary_lists_failures_with_status() -> None:
    failures = pd.DataFrame({
        "user_id": ["ghost", "flaky"], "device_id": [None, None],
        "status": ["not_found", "failed"], "http_status": [200, 503],
        "attempts": [1, 4], "error": ["User id and device id not seen before", "ServerError"],
    })
    ps = StandInProfileSet([profile("one_rec")], failures)
    frame = tables.summary(ps)
    assert list(frame["user_id"]) == ["testUser", "ghost", "flaky"]
    assert list(frame["status"]) == ["ok", "not_found", "failed"]
    assert frame["status"].dtype == tables.STATUS_DTYPE
    assert frame["http_status"].tolist()[1:] == [200, 503]
    assert frame["attempts"].tolist()[1:] == [1, 4]
    assert pd.isna(frame["n_items"].iloc[1]) and pd.isna(frame["has_recommendations"].iloc[2])
    assert frame["error"].iloc[1].startswith("User id")
    for column in tables.SUMMARY_COLUMNS:
        assert frame[column].dtype == tables.SUMMARY_DTYPES[column], column
    # The other tables use .profiles only.
    assert len(tables.recommendations(ps)) == 5


def test_summary_with_real_profileset() -> None:
    ps = ProfileSet(
        [
            Outcome(id="testUser", status="ok", http_status=200, attempts=1, profile=profile("one_rec")),
            Outcome(id="ghost", status="not_found", http_status=200, attempts=1,
                    error="User id and device id not seen before"),
        ],
        query=QUERIES["one_rec"],
    )
    frame = tables.summary(ps)
    assert list(frame["user_id"]) == ["testUser", "ghost"]
    assert list(frame["status"]) == ["ok", "not_found"]
    assert frame["http_status"].tolist()[1] == 200
    assert len(tables.recommendations(ps)) == 5


# -- input handling -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "function",
    [tables.recommendations, tables.properties, tables.cohorts, tables.cohort_matrix,
     tables.computations, tables.propensities, tables.summary],
)
def test_inputs_never_mutated_and_forms_agree(function: Any) -> None:
    bodies = [sample(n) for n in NAMES]
    before = copy.deepcopy(bodies)
    from_dicts = function(bodies)
    assert bodies == before
    profiles = [UserProfile.from_json(b) for b in bodies]
    profiles_before = list(profiles)
    from_profiles = function(profiles)
    assert profiles == profiles_before
    from_set = function(StandInProfileSet(profiles, pd.DataFrame()))
    pd.testing.assert_frame_equal(from_dicts, from_profiles)
    pd.testing.assert_frame_equal(from_profiles, from_set)


def test_bad_input_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="ProfileSet"):
        tables.recommendations("testUser")
    with pytest.raises(TypeError, match="item 1"):
        tables.recommendations([sample("one_rec"), 42])


def test_sample_org_users_tabulate() -> None:
    from amptools.sample.dataset import SampleOrg  # a broken import is a failure, not a skip

    org = SampleOrg(n_users=40)
    query = ProfileQuery(recs=("home-feed", "similar-items"), amp_props=True, cohort_ids=True,
                         computations=True, predictions=("0x10x", "0x2a7c"), split_computations=True)
    profiles = [
        UserProfile.from_payloads([org.payload(i, part.to_params()) for part in query.parts()], query)
        for i in range(40)
    ]
    recs = tables.recommendations(profiles)
    assert set(recs["rank"]) <= set(range(1, 11))
    props = tables.properties(profiles)
    comps = tables.computations(profiles)
    assert not set(comps["computation"].cat.categories) & set(props.columns)
    assert props.attrs["key_kinds"] == {} and (comps["kind"] == "computation").all()
    # The same answers merged in one request and read without the org's names: every
    # text key may be either, so it is in both tables, flagged in both.
    merged = [UserProfile.from_json(org.payload(i, query.split().parts()[0].to_params() | {
        "get_computations": "true"}), replace(query, split_computations=False)) for i in range(40)]
    merged_props, merged_comps = tables.properties(merged), tables.computations(merged)
    unclear = {k for k, kind in merged_props.attrs["key_kinds"].items() if kind == "unverified"}
    assert set(comps["computation"].cat.categories) <= unclear
    assert set(merged_comps["computation"].cat.categories) == unclear
    assert (merged_comps["kind"] == "unverified").all()
    assert "number_property" in merged_props.columns and "number_property" not in unclear  # a number
    assert len(tables.propensities(profiles)) == 2 * 40
    summary = tables.summary(profiles)
    assert len(summary) == 40 and (summary["status"] == "ok").all()
    assert summary["n_items"].sum() == len(recs)


def test_last_updated_matches_model() -> None:
    frame = tables.recommendations(sample("one_rec"))
    assert frame["last_updated"].iloc[0].to_pydatetime() == datetime.fromtimestamp(1608670720, timezone.utc)


# -- fast paths against straightforward references ----------------------------------------
VARIED_BODIES = [
    payload("a", recommendations=[
        {"rec_id": "r1", "child_rec_id": "c", "items": ["é", "x", "🎁"], "is_control": False,
         "recommendation_source": "m", "last_updated": 1608670720},
        {"rec_id": "r0", "items": [], "is_control": None, "last_updated": "2021-03-24T10:00:00Z"},
    ], amp_props={"s": "Zoë", "i": 1, "b": True, "f": 1.5, "n": None, "mix": "x", "nan": None},
        cohort_ids=["c2", "c1"]),
    payload("Zoë & Łukasz #194", recommendations=[], amp_props={}, cohort_ids=[]),
    payload("c", recommendations=[{"rec_id": "r1", "items": ["x", 3], "is_control": True,
                                   "last_updated": 1608670720123}],
            amp_props={"s": None, "i": 2**70, "b": False, "f": 2, "mix": 3, "nan": float("nan")},
            cohort_ids=["c1"]),
    payload("d"),
]


def test_kind_matches_infer_dtype() -> None:
    from pandas.api.types import infer_dtype

    nan = float("nan")
    for values in ([], [None], [True, None], [1, None], [1, True], ["a", None], ["a", nan],
                   [1.0, nan], [nan], [1, 2.5], ["a", 1], [[1], None], [np.int64(1)],
                   [np.str_("a")], [pd.NA, "a"]):
        array = np.empty(len(values), dtype=object)
        array[:] = values
        assert tables._kind(array) == infer_dtype(array, skipna=True), values


def test_numbers_and_text_match_reference() -> None:
    raw = np.array(["1", None, "n/a", "1", "2.5", "", "1e3", "true", "é", None, "1"], dtype=object)
    values, text = tables._numbers_and_text(raw)
    expected = pd.to_numeric(raw, errors="coerce").astype(np.float64)
    np.testing.assert_array_equal(values, expected)
    pd.testing.assert_extension_array_equal(text, pd.array(raw, dtype="str"))
    # Non-text values are never merged by hashing (1 == 1.0 == True).
    mixed = np.array([1, 1.0, True, "1"], dtype=object)
    values, text = tables._numbers_and_text(mixed)
    assert list(text) == ["1", "1.0", "True", "1"]
    empty_values, empty_text = tables._numbers_and_text(np.empty(0, dtype=object))
    assert len(empty_values) == 0 and len(empty_text) == 0


def _reference_recommendations(profiles: list[UserProfile]) -> pd.DataFrame:
    rows = []
    for p in profiles:
        for rec in p.recommendations or ():
            for rank, item in enumerate(rec.items, start=1):
                rows.append((p.user_id, p.device_id, rec.rec_id, rec.child_rec_id,
                             rec.recommendation_source, rec.is_control, rec.last_updated, rank, item))
    frame = pd.DataFrame(rows, columns=list(tables.RECOMMENDATION_COLUMNS))
    # Set-level categories come from every set, also sets without items (as before).
    seen = {name: {getattr(rec, name) for p in profiles for rec in p.recommendations or ()}
            for name in ("rec_id", "child_rec_id", "recommendation_source")}
    seen["item"] = set(frame["item"])
    out = {}
    for name, dtype in tables.RECOMMENDATION_DTYPES.items():
        column = frame[name]
        if dtype == "category":
            categories = pd.Index(sorted(v for v in seen[name] if pd.notna(v)), dtype="str")
            out[name] = pd.Categorical(column.astype(object), categories=categories)
        elif name == "last_updated":
            out[name] = pd.to_datetime(column, utc=True).dt.as_unit("us")
        elif name == "is_control":
            out[name] = pd.array(column.tolist(), dtype="boolean")
        else:
            out[name] = column.astype(dtype)
    return pd.DataFrame(out)


@pytest.mark.parametrize("bodies", [VARIED_BODIES, VARIED_BODIES[1:2], VARIED_BODIES[3:], []])
def test_fast_tables_match_reference(bodies: list[dict[str, Any]]) -> None:
    profiles = [UserProfile.from_json(b) for b in bodies]
    pd.testing.assert_frame_equal(
        tables.recommendations(profiles), _reference_recommendations(profiles), check_dtype=True
    )
    comps = [UserProfile(user_id=f"u{i}", device_id=None, recommendations=None,
                         computations=c)
             for i, c in enumerate([{"a": "1", "b": None}, {}, None, {"é": "n/a", "a": "1"}])]
    frame = tables.computations(comps)
    assert list(frame["user_id"]) == ["u0", "u0", "u3", "u3"]
    assert list(frame["computation"]) == ["a", "b", "é", "a"]
    assert frame["value"].tolist()[0] == 1.0 and frame["value"].isna().tolist() == [False, True, True, False]
    props = tables.properties(profiles)
    if profiles:
        assert len(props) == len(profiles)
    if bodies is VARIED_BODIES:
        assert props["s"].dtype == "str" and props["b"].dtype == "boolean"
        assert props["i"].dtype == object and props["i"].iloc[2] == 2**70
        assert props["f"].dtype == "float64" and props["mix"].dtype == object
        assert props["nan"].dtype == object


# -- column-wise builders against plain row-by-row references ----------------------------------
def _reference_summary(profiles: list[UserProfile]) -> list[tuple[Any, ...]]:
    def count(part: Any) -> Any:
        return None if part is None else len(part)

    rows = []
    for p in profiles:
        recs, comps = p.recommendations, p.computations
        known = [r.is_control for r in recs or () if r.is_control is not None]
        rows.append((
            p.user_id, p.device_id, "ok",
            recs is not None, p.amp_props is not None, p.cohort_ids is not None,
            comps is not None, p.propensities is not None,
            count(recs), None if recs is None else sum(len(r.items) for r in recs),
            count(p.cohort_ids), count(p.amp_props), count(comps),
            None if comps is None else sum(v is None for v in comps.values()),
            count(p.propensities), any(known) if known else None, None, None, None,
        ))
    return rows


def _plain(value: Any) -> Any:
    return None if value is pd.NA or (isinstance(value, float) and value != value) else value


REFERENCE_PROFILES = [UserProfile.from_json(b) for b in VARIED_BODIES] + [
    UserProfile(user_id=None, device_id="dev", recommendations=(), computations={"a": None, "b": "1"},
                cohort_ids=("c2", "c2", "user_id"), propensities=()),
    UserProfile.from_json(payload("p", propensities=[
        {"prop": 0.5, "pred_id": "p1", "prop_type": "score"},
        {"prop": None, "pred_id": None, "prop_type": "pct"}])),
]


@pytest.mark.parametrize("profiles", [REFERENCE_PROFILES, REFERENCE_PROFILES[3:4], []])
def test_summary_matches_row_reference(profiles: list[UserProfile]) -> None:
    frame = tables.summary(profiles)
    assert list(frame.columns) == list(tables.SUMMARY_COLUMNS)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        c: str(pd.Series(dtype=t).dtype) for c, t in tables.SUMMARY_DTYPES.items()}
    got = [tuple(_plain(v) for v in row) for row in frame.astype(object).itertuples(index=False)]
    assert got == _reference_summary(profiles)


def test_summary_failures_after_profiles_column_wise() -> None:
    failures = pd.DataFrame({"user_id": ["f1", "f2"], "device_id": [None, "d"],
                             "status": ["not_found", "weird"], "http_status": [404, None],
                             "attempts": [1, 3], "error": [None, "boom"]})
    frame = tables.summary(StandInProfileSet(REFERENCE_PROFILES, failures))
    n = len(REFERENCE_PROFILES)
    assert list(frame["status"].cat.categories) == ["ok", "not_found", "failed", "weird"]
    assert frame["status"].tolist() == ["ok"] * n + ["not_found", "weird"]
    tail = frame.iloc[n:]
    assert tail["http_status"].tolist()[0] == 404 and tail["http_status"].isna().tolist() == [False, True]
    assert tail["attempts"].tolist() == [1, 3] and tail["error"].isna().tolist() == [True, False]
    assert tail[list(tables.SUMMARY_COLUMNS[3:16])].isna().all().all()
    assert frame["http_status"].iloc[:n].isna().all() and frame["error"].iloc[:n].isna().all()


@pytest.mark.parametrize("chosen", [None, ["c2", "nope", "c2", "user_id"]])
@pytest.mark.parametrize("profiles", [REFERENCE_PROFILES, []])
def test_cohort_matrix_and_cohorts_match_row_reference(chosen: Any, profiles: list[UserProfile]) -> None:
    frame = tables.cohort_matrix(profiles, cohorts=chosen)
    names = (sorted({c for p in profiles for c in p.cohort_ids or ()}) if chosen is None
             else list(dict.fromkeys(chosen)))
    labels = ["cohort:user_id" if n == "user_id" else n for n in names]
    assert list(frame.columns) == ["user_id", "device_id", *labels]
    for name, label in zip(names, labels):
        assert frame[label].dtype == "boolean"
        expected = [None if p.cohort_ids is None else name in p.cohort_ids for p in profiles]
        assert [_plain(v) for v in frame[label].astype(object)] == expected
    long = tables.cohorts(profiles)
    assert [tuple(map(_plain, r)) for r in long.astype(object).itertuples(index=False)] == [
        (p.user_id, p.device_id, c) for p in profiles for c in p.cohort_ids or ()]


def test_propensities_match_row_reference() -> None:
    frame = tables.propensities(REFERENCE_PROFILES)
    expected = [(p.user_id, p.device_id, e.prediction_id, e.propensity_type, e.value)
                for p in REFERENCE_PROFILES for e in p.propensities or ()]
    assert len(expected) == 2
    assert [tuple(map(_plain, r)) for r in frame.astype(object).itertuples(index=False)] == expected
    assert [str(t) for t in frame.dtypes] == ["str", "str", "category", "category", "float64"]


def test_parsed_profiles_never_share_the_payload_dicts() -> None:
    """The faster parse still copies: a profile never holds a payload's own dict."""
    query = ProfileQuery(recs=("r",), amp_props=True, computations=True)
    main = payload("u", recommendations=[{"rec_id": "r", "items": ["a", 2], "x": 1}],
                   amp_props={"p": 1}, cohort_ids=["c"])
    comps = payload("u", amp_props={"k": 3})
    before = copy.deepcopy((main, comps))
    merged = UserProfile.from_payloads([main, comps], query)
    assert merged.amp_props == {"p": 1} and merged.amp_props is not main["userData"]["amp_props"]
    assert merged.computations == {"k": "3"} and merged.raw is main and merged.raw_computations is comps
    assert merged.recommendations[0].items == ("a", "2") and merged.recommendations[0].extra == {"x": 1}
    assert merged.cohort_ids == ("c",)
    single = UserProfile.from_json(main)
    assert single.amp_props == {"p": 1} and single.amp_props is not main["userData"]["amp_props"]
    assert (main, comps) == before


def test_slotted_models_pickle_compare_and_tabulate_like_before() -> None:
    """Models are slotted (less memory per profile) and rec_ids are interned on parse.

    Pickling, equality, hashing and the tables must not notice.
    """
    import pickle
    from dataclasses import fields, replace

    from amptools.models import Propensity, Recommendation

    for cls in (UserProfile, Recommendation, Propensity):
        assert hasattr(cls, "__slots__")
    bodies = [
        payload("u1", recommendations=[
            {"rec_id": "".join(["r", "é"]), "items": ["a", "ü"], "is_control": None},
            {"rec_id": "".join(["r", "2"]), "items": [], "child_rec_id": None},
        ], amp_props={"p": 1, "q": None}, cohort_ids=[]),
        payload("u2", recommendations=[{"rec_id": "".join(["r", "é"]), "items": ["b", 3],
                                        "is_control": True, "last_updated": 1700000000}]),
        payload(None, recommendations=None),
    ]
    profiles = [UserProfile.from_json(b) for b in bodies]
    assert profiles[0].recommendations[0].rec_id is profiles[1].recommendations[0].rec_id
    again = pickle.loads(pickle.dumps(profiles, protocol=pickle.HIGHEST_PROTOCOL))
    assert again == profiles and [hash(p) for p in again] == [hash(p) for p in profiles]
    assert [f.name for f in fields(UserProfile)][:3] == ["user_id", "device_id", "recommendations"]
    assert replace(profiles[0], user_id="x").user_id == "x"
    with pytest.raises(AttributeError):
        profiles[0].user_id = "y"  # type: ignore[misc]
    pd.testing.assert_frame_equal(tables.recommendations(again), _reference_recommendations(profiles))
    pd.testing.assert_frame_equal(tables.recommendations(again), tables.recommendations(profiles))
    pd.testing.assert_frame_equal(tables.properties(again), tables.properties(profiles))
    pd.testing.assert_frame_equal(tables.summary(again), tables.summary(profiles))


# -- properties against their documented rules, worked out value by value --------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _missing_value(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _expected_column(values: list[Any], parse_dates: bool) -> Any:
    """The column ``tables.properties`` documents for one property, worked out value by
    value from the values' Python types (``values``: one per user, None where the
    user lacks the key), not with the implementation's steps."""
    present = [v for v in values if not _missing_value(v)]
    types = {type(v) for v in present}
    if types == {bool}:
        return pd.array([None if _missing_value(v) else v for v in values], dtype="boolean")
    if types == {int} and all(-(2**63) <= v < 2**63 for v in present):
        return pd.array([None if _missing_value(v) else v for v in values], dtype="Int64")
    if types and types <= {int, float} and types != {int}:
        return np.array([np.nan if _missing_value(v) else float(v) for v in values], dtype=np.float64)
    if types == {str}:
        if parse_dates:
            # The date check reads the values in order and fails on a NaN it reaches.
            first_other = next((v for v in values if v is not None and v not in _DATES), None)
            if isinstance(first_other, float):
                raise TypeError("a NaN among dates")
            if first_other is None:
                return pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601").dt.as_unit("us").array
        return pd.array(values, dtype="str")
    exactly = np.empty(len(values), dtype=object)  # all null, big ints, mixed or nested: as sent
    exactly[:] = values
    return exactly


def _reference_properties(profiles: list[UserProfile], parse_dates: bool, strip_gp: bool) -> pd.DataFrame:
    """``tables.properties`` as its docstring describes it, computed one property at a time."""
    rows = [p.amp_props or {} for p in profiles]
    names = list(dict.fromkeys(k for r in rows for k in r))
    columns: dict[str, Any] = {
        "user_id": pd.array([p.user_id for p in profiles], dtype=tables.ID_DTYPE),
        "device_id": pd.array([p.device_id for p in profiles], dtype=tables.ID_DTYPE),
    }
    taken = {"user_id", "device_id", *names}
    for name in names:
        label = name
        if strip_gp and name.startswith("gp:") and name[3:] and name[3:] not in taken:
            label = name[3:]  # stripped only when that name is free
            taken.add(label)
        if label in ("user_id", "device_id"):
            label = "property:" + label
            while label in taken:  # another property has that name too
                label = "property:" + label
            taken.add(label)
        columns[label] = _expected_column([r.get(name) for r in rows], parse_dates)
    return pd.DataFrame(columns, copy=False)


def _same_value(a: Any, b: Any) -> bool:
    """Exactly the same value: same type, equal, or both NaN (None is not NaN, 1 is not True)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and a != a:
        return b != b
    return bool(a == b)


_NAN = float("nan")
_DATES = ("2020-01-13", "2021-03-24T10:00:00Z", "2021-03-24 10:00", "2024-02-29T23:59:59.123456+02:00")
_PROPERTY_VALUES = {
    "bool": st.booleans(),
    "int": st.integers(min_value=-(2**40), max_value=2**40),
    "bigint": st.integers(min_value=-(2**70), max_value=2**70),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "text": st.text(max_size=4),
    "date": st.sampled_from(_DATES),
    "nested": st.one_of(st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)),
}
_ODD_VALUES = st.one_of(st.none(), st.just(_NAN), st.just(np.nan), st.booleans(), st.integers(),
                        st.floats(), st.text(max_size=3), st.sampled_from(_DATES),
                        st.lists(st.none(), max_size=1))
_PROPERTY_KEYS = st.one_of(
    st.sampled_from(["a", "b", "gp:a", "gp:b", "gp:", "user_id", "device_id", "gp:user_id",
                     "property:user_id", "é", "Zoë & Łukasz", "🙂", ""]),
    st.text(max_size=4),
)


@st.composite
def _property_profiles(draw: Any) -> list[UserProfile]:
    keys = draw(st.lists(_PROPERTY_KEYS, max_size=6, unique=True))
    kinds = {k: draw(st.sampled_from(sorted(_PROPERTY_VALUES))) for k in keys}
    odd = draw(st.floats(min_value=0, max_value=0.5))  # how often a value breaks its column's type
    profiles = []
    for i in range(draw(st.integers(min_value=0, max_value=8))):
        if draw(st.integers(0, 9)) == 0:
            props = None
        else:
            props = {}
            for k in draw(st.permutations(keys)):
                if draw(st.booleans()):
                    if draw(st.floats(0, 1)) < odd:
                        props[k] = draw(_ODD_VALUES)
                    else:
                        props[k] = draw(_PROPERTY_VALUES[kinds[k]])
        profiles.append(UserProfile(user_id=f"u{i}", device_id=None, recommendations=None,
                                    amp_props=props))
    return profiles


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(profiles=_property_profiles(), parse_dates=st.booleans(), strip_gp=st.booleans())
def test_properties_follow_the_documented_rules(
    profiles: list[UserProfile], parse_dates: bool, strip_gp: bool
) -> None:
    before = copy.deepcopy([p.amp_props for p in profiles])
    try:
        expected = _reference_properties(profiles, parse_dates, strip_gp)
    except Exception as error:  # e.g. a NaN among dates with parse_dates: same error
        with pytest.raises(type(error)):
            tables.properties(profiles, parse_dates=parse_dates, strip_gp=strip_gp)
        return
    frame = tables.properties(profiles, parse_dates=parse_dates, strip_gp=strip_gp)
    pd.testing.assert_frame_equal(frame, expected, check_dtype=True)
    for name in frame.columns:
        if frame[name].dtype == object:  # values exactly as sent: None is not NaN, 1 is not True
            got, want = frame[name].tolist(), expected[name].tolist()
            assert all(map(_same_value, got, want)), (name, got, want)
    assert [p.amp_props for p in profiles] == before or _has_nan(before)


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return value != value
    if isinstance(value, dict):
        return any(map(_has_nan, value.values()))
    if isinstance(value, list):
        return any(map(_has_nan, value))
    return False


def test_properties_missing_keys_vs_none_and_nan_values() -> None:
    nan = float("nan")
    profiles = [
        UserProfile(user_id="a", device_id=None, recommendations=None,
                    amp_props={"mix": None, "n": nan, "big": 2**70, "d": "2020-01-13"}),
        UserProfile(user_id="b", device_id=None, recommendations=None, amp_props={"mix": "x", "n": np.nan}),
        UserProfile(user_id="c", device_id=None, recommendations=None, amp_props={"mix": 1, "big": 1}),
        UserProfile(user_id="d", device_id=None, recommendations=None, amp_props=None),
    ]
    frame = tables.properties(profiles, parse_dates=True)
    assert frame["mix"].tolist()[:3] == [None, "x", 1] and frame["mix"].iloc[3] is None
    values = frame["n"].tolist()
    assert values[0] is nan and values[1] is np.nan and values[2] is None and values[3] is None
    assert frame["big"].tolist() == [2**70, None, 1, None]
    assert frame["d"].dtype == "datetime64[us, UTC]" and frame["d"].isna().tolist() == [False, True, True, True]
    pd.testing.assert_frame_equal(frame, _reference_properties(profiles, True, False))
