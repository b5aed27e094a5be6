"""amptools.reading: stored answers to tables, fast, and exactly what the profiles give."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import amptools as amp
from amptools import reading, tables
from amptools.errors import ResponseFormatError
from amptools.models import UserProfile
from amptools.sample import SampleOrg

ORG = SampleOrg()
ALL_TABLES = ("recommendations", "properties", "cohorts", "computations", "propensities", "summary", "cohort_matrix")


def stored(query: amp.ProfileQuery, n_users: int = 60) -> tuple[list[str], list[str | None] | None]:
    """The sample org's answers to ``query`` as JSON text, as a snapshot keeps them."""
    parts = query.parts()
    bodies, second = [], []
    for index in range(n_users):
        answers = [ORG.payload(index, part.to_params()) for part in parts]
        bodies.append(json.dumps(answers[0], ensure_ascii=False))
        second.append(json.dumps(answers[1]) if len(answers) > 1 else None)
    return bodies, (second if len(parts) > 1 else None)


def exact(bodies, query, second=None, which=reading.FAST_TABLES):
    profiles = [UserProfile.from_payloads([json.loads(b), *([json.loads(s)] if s else [])], query)
                for b, s in zip(bodies, second or [None] * len(bodies))]
    return {name: getattr(tables, name)(profiles) for name in which}


@pytest.fixture
def no_slow_path(monkeypatch):
    """Fail the test if the exact path is taken (the fast path must handle these answers)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the exact path was taken")

    monkeypatch.setattr(reading, "read_profiles", refuse)


QUERIES = {
    "two requests": amp.ProfileQuery(recs=("home-feed", "similar-items", "email-picks"), amp_props=True,
                                     cohort_ids=True, computations=True, split_computations=True),
    "properties only": amp.ProfileQuery(amp_props=True, cohort_ids=True),
    "recommendations only": amp.ProfileQuery(recs=("home-feed", "testRecId")),
    "computations only": amp.ProfileQuery(computations=True),
    "listed computations": amp.ProfileQuery(computations=("revenue_90d", "no-such-computation")),
}


@pytest.mark.parametrize("name", QUERIES)
def test_the_fast_path_gives_exactly_the_tables_of_the_profiles(name, no_slow_path):
    query = QUERIES[name]
    bodies, second = stored(query)
    fast = reading.read_tables(bodies, query=query, computation_bodies=second)
    expected = exact(bodies, query, second)
    assert list(fast) == list(reading.FAST_TABLES)
    for table in reading.FAST_TABLES:
        pd.testing.assert_frame_equal(fast[table], expected[table], obj=f"{name}: {table}")


def answer(**user_data):
    return json.dumps({"userData": {"user_id": "u", "device_id": "d", **user_data}})


ODD_ANSWERS = {
    "items that are numbers": answer(recommendations=[{"rec_id": "r", "items": [1, 2]}]),
    "milliseconds": answer(recommendations=[{"rec_id": "r", "items": ["a"], "last_updated": 1712345678123}]),
    "an ISO time": answer(recommendations=[{"rec_id": "r", "items": ["a"], "last_updated": "2024-04-05T10:00:00Z"}]),
    "fractional seconds": answer(recommendations=[{"rec_id": "r", "items": ["a"], "last_updated": 1712345678.25}]),
    "is_control as 1": answer(recommendations=[{"rec_id": "r", "items": ["a"], "is_control": 1}]),
    "cohort_memberships": answer(cohort_memberships=[{"cohort_id": "c1"}, "c2"]),
    "user_properties": answer(user_properties={"plan": "pro"}),
    "a numeric user id": json.dumps({"userData": {"user_id": 7, "amp_props": {"x": 1}}}),
    "a body across lines": json.dumps({"userData": {"user_id": "u", "amp_props": {"x": 1}}}, indent=1),
    "NaN": '{"userData": {"user_id": "u", "amp_props": {"x": NaN}}}',
    "a lone surrogate": '{"userData": {"user_id": "u", "amp_props": {"x": "a\\ud800"}}}',
}


@pytest.mark.parametrize("name", ODD_ANSWERS)
def test_what_the_fast_path_does_not_know_goes_the_exact_way(name):
    query = amp.ProfileQuery(recs=("r",), amp_props=True, cohort_ids=True)
    bodies = [*stored(query, 5)[0], ODD_ANSWERS[name]]
    got = reading.read_tables(bodies, query=query, which=ALL_TABLES)
    expected = exact(bodies, query, which=ALL_TABLES)
    for table in ALL_TABLES:
        pd.testing.assert_frame_equal(got[table], expected[table], obj=f"{name}: {table}")


def test_merged_answers_are_read_with_their_names():
    query = amp.ProfileQuery(amp_props=True, computations=True)  # one request: names tell them apart
    payloads = [ORG.payload(i, query.to_params()) for i in range(10)]
    names = amp.ComputationNames(frozenset(ORG.computation_ids), frozenset(ORG.property_names))
    bodies = [json.dumps(p) for p in payloads]
    got = reading.read_tables(bodies, query=query, names=[names] * 10)
    profiles = [UserProfile.from_json(p, query, names) for p in payloads]
    pd.testing.assert_frame_equal(got["computations"], tables.computations(profiles))
    assert set(got["computations"]["computation"].cat.categories) == set(ORG.computation_ids)
    assert not set(got["properties"].columns) & set(ORG.computation_ids)


def test_a_broken_answer_raises_as_the_models_do():
    with pytest.raises(ResponseFormatError, match="userData"):
        reading.read_tables([answer(), json.dumps({"error": "boom"})])
    with pytest.raises(ValueError, match="unknown table"):
        reading.read_tables([answer()], which=["recommendation"])
    empty = reading.read_tables([], which=ALL_TABLES)
    for table in ALL_TABLES:
        pd.testing.assert_frame_equal(empty[table], getattr(tables, table)([]), obj=table)


def test_the_garbage_collector_is_left_as_it_was():
    import gc

    query = QUERIES["two requests"]
    bodies, second = stored(query, 5)
    assert gc.isenabled()
    reading.read_tables(bodies, query=query, computation_bodies=second)
    assert gc.isenabled()
    gc.disable()
    try:
        reading.read_tables(bodies, query=query, computation_bodies=second)
        assert not gc.isenabled()
    finally:
        gc.enable()
