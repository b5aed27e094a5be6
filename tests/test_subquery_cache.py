"""A cached answer to a wider query answers a narrower one (issue 17): no request, no
exposure event. The rule stays one pure function, ``cache.decide``."""

from __future__ import annotations

import os
import warnings

import pandas as pd
import pytest

import amptools as amp
from amptools import tables
from amptools.cache import StoredParts, StoredBody, decide
from amptools.models import narrowed
from amptools.query import ProfileQuery
from amptools.sample import SampleServer

WIDE = ProfileQuery(recs=("home-feed", "similar-items"), amp_props=True, cohort_ids=True,
                    predictions=("0x2a7c", "0x3f1e"))
NARROWER = {
    "one rec set": ProfileQuery(recs=("home-feed",)),
    "the other, first": ProfileQuery(recs=("similar-items",)),
    "properties alone": ProfileQuery(amp_props=True),
    "cohorts alone": ProfileQuery(cohort_ids=True),
    "one prediction": ProfileQuery(predictions=("0x3f1e",)),
    "recs and cohorts": ProfileQuery(recs=("similar-items", "home-feed"), cohort_ids=True),
}


@pytest.fixture
def server():
    with SampleServer(rate_limit=100_000, secret_key="subquery-" + os.urandom(5).hex()) as srv:
        yield srv


def fetch(server: SampleServer, ids: list[str], query: ProfileQuery, **options: object) -> amp.bulk.ProfileSet:
    return server.client(rate_limit=100_000).get_profiles(ids, query, progress=False, **options)


@pytest.mark.parametrize("name", list(NARROWER))
def test_a_narrower_query_is_answered_from_a_wider_one_with_no_request(server, tmp_path, name):
    ids = list(server.org.user_ids[1:31]) + ["nobody-knows-me"]
    with pytest.warns(amp.ExposureWarning):
        fetch(server, ids, WIDE, cache=tmp_path / "c.sqlite")
    server.reset_arrivals()
    narrower = NARROWER[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", amp.ExposureWarning)  # no request: no exposure, no warning
        cached = fetch(server, ids, narrower, cache=tmp_path / "c.sqlite")
    assert server.arrivals == []
    assert cached.from_cache == len(ids) and cached.not_found == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", amp.ExposureWarning)
        fresh = fetch(server, ids, narrower)  # the same question asked of the service
    for table in ("recommendations", "properties", "cohorts", "propensities"):
        pd.testing.assert_frame_equal(getattr(tables, table)(cached), getattr(tables, table)(fresh), obj=table)
    # (the summary's error text says the unknown user's answer came from the cache)
    pd.testing.assert_frame_equal(tables.summary(cached).drop(columns="error"),
                                  tables.summary(fresh).drop(columns="error"))


def test_max_age_still_applies(server, tmp_path):
    ids = list(server.org.user_ids[1:11])
    with pytest.warns(amp.ExposureWarning):
        fetch(server, ids, WIDE, cache=tmp_path / "c.sqlite")
    server.reset_arrivals()
    fetch(server, ids, NARROWER["properties alone"], cache=tmp_path / "c.sqlite", max_age=0)
    assert len(server.arrivals) == len(ids)


def test_what_a_wider_answer_cannot_answer_is_asked(server, tmp_path):
    ids = list(server.org.user_ids[1:11])
    merged = ProfileQuery(amp_props=True, computations=True, split_computations=True)
    first = fetch(server, ids, ProfileQuery(amp_props=True, computations=True), cache=tmp_path / "c.sqlite")
    exact = {p.user_id for p in first.profiles if not p.key_kinds}  # the run's check: asked apart
    assert len(exact) == 1
    server.reset_arrivals()
    # Properties and computations came back merged: telling them apart needs names, so
    # properties alone are asked, not guessed — except where they were asked apart.
    fetch(server, ids, ProfileQuery(amp_props=True), cache=tmp_path / "c.sqlite")
    assert {a.params["user_id"] for a in server.arrivals} == set(ids) - exact
    assert not merged.parts()[0].covers(ProfileQuery(cohort_ids=True))  # never asked for cohorts


def test_covers() -> None:
    everything = ProfileQuery(computations=True)
    listed = ProfileQuery(computations=("a", "b"))
    assert everything.covers(listed) and listed.covers(ProfileQuery(computations=("b",)))
    assert not listed.covers(everything) and not listed.covers(ProfileQuery(computations=("c",)))
    assert not ProfileQuery(recs=("a",), rec_type="model").covers(ProfileQuery(recs=("a",)))
    assert not ProfileQuery(predictions=("p",)).covers(ProfileQuery(predictions=("p",), propensity_type="pct"))
    merged = ProfileQuery(amp_props=True, computations=("a",))
    assert merged.covers(merged) and not merged.covers(ProfileQuery(amp_props=True))
    assert not merged.covers(ProfileQuery(computations=("a",)))
    assert WIDE.covers(ProfileQuery()) and not ProfileQuery().covers(ProfileQuery(cohort_ids=True))


def test_decide_takes_the_narrower_answer_out_of_a_stored_wider_one() -> None:
    body = {"userData": {"user_id": "u", "device_id": "d", "extra": 1,
                         "recommendations": [{"rec_id": "a", "items": ["x"]}, {"rec_id": "b", "items": ["y"]}],
                         "amp_props": {"plan": "pro"}, "cohort_ids": ["c1"],
                         "propensity": None, "propensities": [{"prop": 0.1, "pred_id": "p", "prop_type": "score"},
                                                              {"prop": 0.2, "pred_id": "q", "prop_type": "score"}]}}
    wide = ProfileQuery(recs=("a", "b"), amp_props=True, cohort_ids=True, predictions=("p", "q"))
    entry = StoredParts("u", {wide.canonical(): StoredBody(wide.canonical(), body, at=1.0, attempts=2)})
    answer = decide(entry, [ProfileQuery(recs=("b",), predictions=("q",))])
    assert answer.status == "ok"
    data = answer.payloads[0]["userData"]
    assert [r["rec_id"] for r in data["recommendations"]] == ["b"]
    assert data["amp_props"] is None and data["cohort_ids"] is None and data["extra"] == 1
    assert data["propensity"] == 0.2 and [e["pred_id"] for e in data["propensities"]] == ["q"]
    assert body["userData"]["amp_props"] == {"plan": "pro"}  # the stored body is not changed
    assert decide(entry, [ProfileQuery(computations=True)]).status == "missing"
    assert narrowed(body, ProfileQuery())["userData"]["recommendations"] is None
