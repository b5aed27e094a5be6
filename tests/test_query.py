from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amptools import InvalidQueryError, ProfileQuery
from amptools.query import validate_id


def test_defaults_send_nothing_extra():
    assert ProfileQuery().to_params() == {}


def test_every_documented_parameter():
    q = ProfileQuery(
        recs=("a", "b"), rec_type="random", amp_props=True, cohort_ids=True,
        computations=("c1", "c2"), predictions=("p1",), propensity_type="pct",
    )
    assert q.to_params() == {
        "get_recs": "true", "rec_id": "a,b", "rec_type": "random",
        "get_amp_props": "true", "get_cohort_ids": "true", "comp_id": "c1,c2",
        "get_propensity": "true", "prediction_id": "p1", "propensity_type": "pct",
    }
    assert ProfileQuery(computations=True).to_params() == {"get_computations": "true"}


def test_single_string_is_one_id_and_duplicates_collapse():
    assert ProfileQuery(recs="testRecId").recs == ("testRecId",)
    assert ProfileQuery(recs=["a", "b", "a"]).recs == ("a", "b")


def test_immutable_hashable_and_canonical():
    a = ProfileQuery(recs=["x"], amp_props=True)
    b = ProfileQuery(recs=("x",), amp_props=True)
    assert a == b and hash(a) == hash(b) and a.canonical() == b.canonical()
    assert a.canonical() != ProfileQuery(recs=("x",)).canonical()
    assert len({a, b}) == 1
    with pytest.raises(AttributeError):
        a.recs = ("y",)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"recs": ("a,b",)}, "contains a comma"),
        ({"recs": ("",)}, "empty or blank"),
        ({"recs": ("  ",)}, "empty or blank"),
        ({"computations": ("x,y",)}, "comma"),
        ({"predictions": ("p,q",)}, "comma"),
        ({"propensity_type": "percent"}, "'score'"),
        ({"rec_type": "model"}, "no recommendation ids"),
        ({"recs": ("a",), "rec_type": "model; drop"}, "rec_type"),
        ({"computations": []}, "empty list"),
        ({"amp_props": "yes"}, "True or False"),
    ],
)
def test_bad_input_says_what_to_fix(kwargs, words):
    with pytest.raises(InvalidQueryError, match=words):
        ProfileQuery(**kwargs)


def test_invalid_query_error_is_a_value_error():
    with pytest.raises(ValueError):
        ProfileQuery(propensity_type="x")


def test_percentile_alias():
    assert ProfileQuery(predictions="p", propensity_type="percentile").propensity_type == "pct"


def test_parts_split_computations_from_properties():
    q = ProfileQuery(recs=("r",), amp_props=True, computations=True, split_computations=True)
    main, comps = q.parts()
    assert "get_computations" not in main.to_params() and main.to_params()["get_amp_props"] == "true"
    assert comps.to_params() == {"get_computations": "true"}
    assert ProfileQuery(amp_props=True, computations=True, split_computations=False).parts() == (
        ProfileQuery(amp_props=True, computations=True, split_computations=False),
    )
    assert len(ProfileQuery(computations=True).parts()) == 1
    # One request by default, whatever is asked.
    assert len(ProfileQuery(recs=("r",), amp_props=True, computations=True).parts()) == 1


def test_the_canonical_form_still_matches_what_older_amptools_wrote():
    # Older amptools split by default and wrote split_computations: true in every key;
    # their cache entries must still be found.
    assert '"split_computations":true' in ProfileQuery(amp_props=True).canonical()
    assert '"split_computations":true' in ProfileQuery(computations=True).canonical()
    merged = ProfileQuery(amp_props=True, computations=True)
    assert merged.canonical() != merged.split().canonical()
    assert [p.canonical() for p in merged.split().parts()] == [
        ProfileQuery(amp_props=True).canonical(), ProfileQuery(computations=True).canonical()]


def test_from_options_rejects_unknown_names():
    with pytest.raises(InvalidQueryError, match="unknown query option"):
        ProfileQuery.from_options(recz=("a",))
    base = ProfileQuery(recs="a")
    assert ProfileQuery.from_options(base, amp_props=True) == ProfileQuery(recs="a", amp_props=True)


@pytest.mark.parametrize("bad", [None, 1.0, True, "", " \t", b"bytes"])
def test_validate_id_refuses(bad):
    with pytest.raises(InvalidQueryError):
        validate_id(bad)


def test_validate_id_accepts_ints_and_any_text():
    assert validate_id(123) == "123"
    assert validate_id(" a b ") == " a b "


# Any text a real id can be: every character but the comma, NUL and lone surrogates
# (those are refused; see test_ids_that_cannot_be_sent_are_refused).
_ID_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=",\x00"), min_size=1)


@given(st.lists(_ID_TEXT.filter(str.strip), min_size=1, max_size=5))
def test_any_unicode_rec_ids_roundtrip_through_params(ids):
    q = ProfileQuery(recs=ids)
    assert q.to_params()["rec_id"].split(",") == list(dict.fromkeys(ids))


@pytest.mark.parametrize("value", ["a\ud800b", "\udfff", "nul\x00inside"])
def test_ids_that_cannot_be_sent_are_refused(value):
    with pytest.raises(InvalidQueryError, match="NUL or a lone surrogate"):
        validate_id(value)
    with pytest.raises(InvalidQueryError, match="NUL or a lone surrogate"):
        ProfileQuery(recs=(value,))


@pytest.mark.parametrize("field", ["recs", "predictions", "computations"])
def test_byte_strings_are_refused_not_sent_as_numbers(field):
    # Iterating b"ab" gives 97, 98: it used to send rec_id=97,98.
    with pytest.raises(InvalidQueryError, match="byte string"):
        ProfileQuery(**{field: b"ab"})


@pytest.mark.parametrize("word", ["all", "ALL", "true", "none", "*"])
def test_computations_all_as_text_is_refused(word):
    with pytest.raises(InvalidQueryError, match="pass True for every computation"):
        ProfileQuery(computations=word)
    assert ProfileQuery(computations=("all-time-spend",)).to_params()["comp_id"] == "all-time-spend"
