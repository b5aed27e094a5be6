"""Parsing with literal JSON: the documented payloads, the other spellings, bad shapes."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from amptools import ProfileQuery, Propensity, ResponseFormatError, UserProfile
from amptools.models import ComputationNames


def doc(**user_data):
    base = {"recommendations": None, "user_id": "testUser", "device_id": "ffff-ffff-ffff-ffff",
            "amp_props": None, "cohort_ids": None}
    base.update(user_data)
    return {"userData": base}


REC = {"rec_id": "testRecId", "child_rec_id": "testRecId",
       "items": ["cookie", "cracker", "chocolate milk", "donut", "croissant"],
       "is_control": False, "recommendation_source": "model", "last_updated": 1608670720}


def test_one_recommendation_set():
    p = UserProfile.from_json(doc(recommendations=[REC]))
    (rec,) = p.recommendations
    assert rec.items == ("cookie", "cracker", "chocolate milk", "donut", "croissant")
    assert rec.last_updated == datetime(2020, 12, 22, 20, 58, 40, tzinfo=timezone.utc)
    assert rec.is_control is False and rec.recommendation_source == "model"
    assert (p.user_id, p.device_id) == ("testUser", "ffff-ffff-ffff-ffff")
    assert p.amp_props is None and p.cohort_ids is None and p.computations is None
    assert p.propensities is None


def test_not_asked_is_none_and_asked_empty_is_empty():
    p = UserProfile.from_json(doc(recommendations=[], amp_props={}, cohort_ids=[]))
    assert p.recommendations == () and p.amp_props == {} and p.cohort_ids == ()


def test_asked_empty_computations_and_propensities_are_not_none():
    nothing = doc(amp_props=None, propensity=None)
    assert UserProfile.from_json(nothing, ProfileQuery(computations=True)).computations == {}
    listed = UserProfile.from_json(nothing, ProfileQuery(computations=("c1",)))
    assert listed.computations == {"c1": None}
    assert UserProfile.from_json(nothing, ProfileQuery(predictions="p")).propensities == ()
    assert UserProfile.from_json(nothing).propensities is None  # not asked
    assert UserProfile.from_json(nothing).computations is None


def test_user_properties_keep_their_types():
    props = {"library": "http/1.0", "first_used": "2020-01-13", "number_property": 12,
             "boolean_property": True}
    p = UserProfile.from_json(doc(amp_props=props), ProfileQuery(amp_props=True))
    assert p.amp_props == props and p.computations is None


def test_computations_alone_are_computations_not_properties():
    payload = doc(amp_props={"computed-prop-1": "5000000.0", "computed-prop-2": "3"})
    p = UserProfile.from_json(payload, ProfileQuery(computations=True))
    assert p.computations == {"computed-prop-1": "5000000.0", "computed-prop-2": "3"}
    assert p.amp_props is None


def test_listed_computations_are_split_out_of_merged_properties():
    payload = doc(amp_props={"plan": "pro", "computed-prop-2": "3"})
    p = UserProfile.from_json(payload, ProfileQuery(amp_props=True, computations=("computed-prop-2", "gone")))
    assert p.amp_props == {"plan": "pro"}
    assert p.computations == {"computed-prop-2": "3", "gone": None}


def test_split_query_payloads_merge_into_one_profile():
    q = ProfileQuery(amp_props=True, computations=True, split_computations=True)
    main = doc(amp_props={"plan": "pro"})
    comps = doc(amp_props={"computed-prop-1": "1.5"})
    p = UserProfile.from_payloads([main, comps], q)
    assert p.amp_props == {"plan": "pro"} and p.computations == {"computed-prop-1": "1.5"}
    assert p.raw is main and p.raw_computations is comps


def test_a_merged_answer_is_told_apart_by_the_orgs_computation_names():
    q = ProfileQuery(amp_props=True, computations=True)
    merged = doc(amp_props={"plan": "pro", "computed-prop-1": "1.5", "score": "7"})
    # Without names nothing can be told apart: every key is in both, unverified.
    unknown = UserProfile.from_json(merged, q)
    assert unknown.amp_props == unknown.computations == merged["userData"]["amp_props"]
    assert set(unknown.key_kinds.values()) == {"unverified"}
    names = ComputationNames(frozenset({"computed-prop-1", "score", "absent"}), frozenset({"plan", "score"}))
    p = UserProfile.from_json(merged, q, names)
    assert p.amp_props == {"plan": "pro", "score": "7"}  # score: either, so in both
    assert p.computations == {"computed-prop-1": "1.5", "score": "7"}
    assert p.ambiguous_computations == {"score"}  # a property has that name too
    assert p.key_kinds == {"plan": "property", "computed-prop-1": "computation", "score": "ambiguous"}
    # With listed comp ids, the query alone tells them apart.
    listed = UserProfile.from_json(merged, ProfileQuery(amp_props=True, computations=("score",)))
    assert listed.computations == {"score": "7"} and "computed-prop-1" in listed.amp_props


def test_propensity_spellings_normalise_to_one_model():
    listed = UserProfile.from_json(doc(propensity=0.500001, propensities=[
        {"prop": 0.500001, "pred_id": "0x10x", "prop_type": "score"}]))
    assert listed.propensities == (Propensity("0x10x", "score", 0.500001),)
    # The type comes from each entry, not from the request.
    typed = UserProfile.from_json(doc(propensities=[{"prop": 87, "pred_id": "a", "prop_type": "pct"}]),
                                  ProfileQuery(predictions="a", propensity_type="score"))
    assert typed.propensities == (Propensity("a", "pct", 87.0),)
    single = UserProfile.from_json(doc(propensity=0.25), ProfileQuery(predictions="p9"))
    assert single.propensities == (Propensity("p9", "score", 0.25),)
    older = UserProfile.from_json(doc(predictions=[
        {"name": "Churn", "pred_id": "c1", "probability": 0.3, "percentile": 71}]))
    assert older.propensities == (Propensity("c1", "score", 0.3), Propensity("c1", "pct", 71.0))


def test_cohort_memberships_spelling():
    p = UserProfile.from_json(doc(cohort_memberships=["a", {"cohort_id": "b"}]))
    assert p.cohort_ids == ("a", "b")


def test_unknown_fields_survive_in_raw_and_extra():
    payload = doc(recommendations=[dict(REC, score=[0.9, 0.8])], brand_new={"x": 1})
    payload["meta"] = {"trace": "abc"}
    before = copy.deepcopy(payload)
    p = UserProfile.from_json(payload)
    assert p.raw["meta"] == {"trace": "abc"} and p.raw["userData"]["brand_new"] == {"x": 1}
    assert p.recommendations[0].extra == {"score": [0.9, 0.8]}
    assert payload == before  # parsing never changes its input


def test_millisecond_and_iso_timestamps():
    ms = UserProfile.from_json(doc(recommendations=[dict(REC, last_updated=1608670720000)]))
    iso = UserProfile.from_json(doc(recommendations=[dict(REC, last_updated="2020-12-22T20:58:40Z")]))
    assert ms.recommendations[0].last_updated == iso.recommendations[0].last_updated


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "userData"),
        ([], "(body)"),
        ({"userData": []}, "userData"),
        ({"error": "boom"}, "userData"),
        (doc(recommendations={"a": 1}), "userData.recommendations"),
        (doc(recommendations=[dict(REC, items="cookie")]), "userData.recommendations[0].items"),
        (doc(recommendations=[dict(REC, items=[{"x": 1}])]), "userData.recommendations[0].items[0]"),
        (doc(recommendations=[dict(REC, rec_id=None)]), "userData.recommendations[0].rec_id"),
        (doc(recommendations=[dict(REC, is_control="maybe")]), "userData.recommendations[0].is_control"),
        (doc(recommendations=[dict(REC, last_updated=[1])]), "userData.recommendations[0].last_updated"),
        (doc(recommendations=["x"]), "userData.recommendations[0]"),
        (doc(amp_props=["a"]), "userData.amp_props"),
        (doc(cohort_ids="c1"), "userData.cohort_ids"),
        (doc(cohort_ids=[None]), "userData.cohort_ids[0]"),
        (doc(user_id={"a": 1}), "userData.user_id"),
        (doc(propensities=[{"prop": "high", "pred_id": "p"}]), "userData.propensities[0].prop"),
        (doc(propensities={"p": 1}), "userData.propensities"),
    ],
)
def test_malformed_shapes_name_the_field(payload, field):
    with pytest.raises(ResponseFormatError) as info:
        UserProfile.from_json(payload)
    assert info.value.field == field
    assert field in str(info.value)


def test_profiles_are_frozen_and_hashable():
    p = UserProfile.from_json(doc(recommendations=[REC], cohort_ids=["c"]))
    with pytest.raises(AttributeError):
        p.user_id = "x"  # type: ignore[misc]
    assert hash(p) == hash(UserProfile.from_json(doc(recommendations=[REC], cohort_ids=["c"])))
    assert p.recommendation("testRecId").rec_id == "testRecId" and p.recommendation("x") is None
