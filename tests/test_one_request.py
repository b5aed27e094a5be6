"""One request per user, whatever is asked, and never silently wrong (issues 10 and 17).

Counted at the real sample server, shaped like a real org: sparse properties (1-5% of
users), computations enabled for some users only, a name clash as a switch, changes
made while a run goes on. Every key of every merged answer is judged against what the
org holds (``SampleOrg.check_split``): right, flagged, or wrong — and wrong must be 0.

Each test runs its own sample org with a key of its own, so the computation names this
process learned in other tests do not count here.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator

import pandas as pd
import pytest

import amptools as amp
from amptools import names as names_module
from amptools import tables
from amptools.cache import ProfileCache
from amptools.models import ComputationNames
from amptools.names import CHECK_SHARE, MIN_CHECKS, KeyKindWarning
from amptools.sample import Change, SampleServer

UNLIMITED = {"rate_limit": 100_000}
N = 60
MERGED = amp.ProfileQuery(amp_props=True, computations=True)


def key() -> str:
    return "one-request-" + os.urandom(6).hex()


@pytest.fixture
def org() -> Iterator[SampleServer]:
    with SampleServer(rate_limit=100_000, secret_key=key()) as server:
        yield server


def fetch(server: SampleServer, ids: list[str], query: amp.ProfileQuery, **options: object) -> amp.bulk.ProfileSet:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeyKindWarning)  # tests that want it catch it themselves
        return server.client(**UNLIMITED).get_profiles(ids, query, progress=False, workers=8, **options)


def checks(n: int) -> int:
    return max(MIN_CHECKS, math.ceil(n * CHECK_SHARE))


SHAPES = {
    "recs": amp.ProfileQuery(recs=("home-feed", "similar-items")),
    "properties": amp.ProfileQuery(amp_props=True),
    "cohorts": amp.ProfileQuery(cohort_ids=True),
    "all computations": amp.ProfileQuery(computations=True),
    "listed computations": amp.ProfileQuery(computations=("orders_90d", "revenue_90d")),
    "predictions": amp.ProfileQuery(predictions=("0x2a7c",)),
    "properties + listed computations": amp.ProfileQuery(amp_props=True, computations=("orders_90d",)),
    "properties + all computations": MERGED,
    "everything": amp.ProfileQuery(recs=("home-feed",), amp_props=True, cohort_ids=True,
                                   computations=True, predictions=("0x2a7c", "0x3f1e")),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_requests_per_user_for_every_query_shape(org, shape):
    query = SHAPES[shape]
    ids = list(org.org.user_ids[1:N + 1])
    with pytest.warns(amp.ExposureWarning) if query.recs else _no_warning():
        first = fetch(org, ids, query)
    assert first.ok == N
    if not query.merges_computations:
        assert len(org.arrivals) == N  # one request per user
        return
    # Checking the org's names costs one request per checked user (the first, then about
    # one in a hundred, at least five), and one per user whose answer holds a key never
    # seen apart: the sample org's sparse properties make a few of those.
    extra = len(org.arrivals) - N
    assert 1 <= extra <= checks(N) + 12
    org.reset_arrivals()
    more = list(org.org.user_ids[N + 1:2 * N + 1])
    with pytest.warns(amp.ExposureWarning) if query.recs else _no_warning():
        fetch(org, more, query)
    again = len(org.arrivals) - N
    if query.computations is True:
        assert again < extra  # the names learned are kept: fewer refreshes the second time
    else:
        assert again == checks(N)  # listed computations need only the checks


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user_id", *frame.columns[2:3]]).reset_index(drop=True)


def test_one_request_separates_exactly_as_two_requests_on_the_realistic_org(org):
    ids = list(org.org.user_ids[1:301])
    merged = fetch(org, ids, MERGED)
    merged_requests = len(org.arrivals)
    org.reset_arrivals()
    split = fetch(org, ids, MERGED.split())
    assert len(org.arrivals) == 2 * len(ids)
    assert merged_requests <= 1.10 * len(ids)
    assert org.org.check_split(merged.profiles)["wrong"] == 0
    assert org.org.check_split(split.profiles) == {"right": sum(
        len(p.amp_props) + len(p.computations) for p in split.profiles), "flagged": 0, "wrong": 0}
    merged_comps, split_comps = tables.computations(merged), tables.computations(split)
    assert merged_comps["raw"].isna().any()  # users that lack some computations are in it
    assert (merged_comps["kind"] == "computation").all()  # nothing left unclear here
    pd.testing.assert_frame_equal(comparable(merged_comps), comparable(split_comps))
    pd.testing.assert_frame_equal(tables.properties(merged), tables.properties(split))


# -- the five situations of a real org (issue 17): wrong cells counted, 0 allowed -------------
def test_sparse_properties_do_not_use_up_what_finds_a_sparse_computation():
    """Every sparse property is a key never seen before; they must not leave a computation
    enabled for a few users to be filed as a property."""
    with SampleServer(rate_limit=100_000, secret_key=key()) as server:
        ids = list(server.org.user_ids[1:501])
        result = fetch(server, ids, MERGED)
        verdict = server.org.check_split(result.profiles)
    assert verdict["wrong"] == 0 and verdict["flagged"] == 0, verdict
    sparse = tables.computations(result).query("computation == 'trial_days_left'")
    truth = sum("trial_days_left" in server.org.user_computations(i) for i in range(1, 501))
    assert len(sparse) == truth > 10 and (sparse["kind"] == "computation").all()
    keys = tables.keys(result).set_index("key")
    assert keys.loc["utm_source", "kind"] == "property" and keys.loc["trial_days_left", "kind"] == "computation"
    assert keys.loc["utm_source", "n_users"] == sum("utm_source" in p.amp_props for p in result.profiles)


def test_a_computation_added_mid_run_is_learned_and_every_profile_read_again():
    with SampleServer(rate_limit=100_000, secret_key=key(),
                      changes=[Change(after=150, add_computation="new_score")]) as server:
        ids = list(server.org.user_ids[1:401])
        result = fetch(server, ids, MERGED)
        verdict = server.org.check_split(result.profiles)
    assert verdict["wrong"] == 0, verdict
    new = tables.computations(result).query("computation == 'new_score'")
    assert len(new) > 200 and (new["kind"] == "computation").all()
    assert "new_score" not in tables.properties(result).columns


def _learn_yesterday(server_key: str, tmp_path) -> None:
    with SampleServer(rate_limit=100_000, secret_key=server_key) as yesterday:
        fetch(yesterday, list(yesterday.org.user_ids[1:201]), MERGED, cache=tmp_path / "c.sqlite")
    names_module._known.clear()  # as a new process would start the next day


def test_names_cached_yesterday_and_a_new_computation_named_like_a_property(tmp_path):
    server_key = key()
    _learn_yesterday(server_key, tmp_path)
    with SampleServer(rate_limit=100_000, secret_key=server_key,
                      changes=[Change(after=0, add_computation="plan")]) as today:
        with pytest.warns(KeyKindWarning, match="'plan'") as caught:
            result = today.client(**UNLIMITED).get_profiles(
                list(today.org.user_ids[201:401]), MERGED, progress=False, cache=tmp_path / "c.sqlite")
        verdict = today.org.check_split(result.profiles)
    merged = {p.user_id for p in result.profiles if p.key_kinds}  # the others were checks, exact
    assert len(merged) >= 190
    # plan's cells of every merged answer are flagged, in both tables; nothing is wrong.
    assert verdict == {"right": verdict["right"], "flagged": 2 * len(merged), "wrong": 0}, verdict
    assert "split_computations=True" in str(caught[0].message)
    assert tables.properties(result).attrs["key_kinds"] == {"plan": "ambiguous"}
    plan = tables.computations(result).query("computation == 'plan'")
    assert len(plan) == 200
    assert set(plan.loc[plan["kind"] == "ambiguous", "user_id"]) == merged and plan["ambiguous"].sum() == len(merged)
    row = tables.keys(result).iloc[0]
    assert (row["key"], row["kind"], row["n_users"]) == ("plan", "ambiguous", 200)
    assert "computation" in row["how"] and "property" in row["how"]


def test_a_computation_deleted_and_a_property_of_its_name_created(tmp_path):
    server_key = key()
    _learn_yesterday(server_key, tmp_path)
    change = Change(after=0, remove_computation="orders_90d", add_property="orders_90d")
    with SampleServer(rate_limit=100_000, secret_key=server_key, changes=[change]) as today:
        result = fetch(today, list(today.org.user_ids[201:401]), MERGED, cache=tmp_path / "c.sqlite")
        verdict = today.org.check_split(result.profiles)
    assert verdict["wrong"] == 0, verdict
    assert tables.keys(result).set_index("key").loc["orders_90d", "kind"] in ("ambiguous", "property")


def test_a_listed_computation_that_is_also_a_property_is_asked_the_exact_way():
    with SampleServer(rate_limit=100_000, secret_key=key()) as server:
        query = amp.ProfileQuery(amp_props=True, computations=("orders_90d", "plan"))  # plan: a property
        ids = list(server.org.user_ids[1:301])
        result = fetch(server, ids, query)
        props = tables.properties(result)
        for i, user in enumerate(ids, start=1):
            assert props.loc[props["user_id"] == user, "plan"].item() == server.org.user_properties(i)["plan"]
        assert len(server.arrivals) == 2 * len(ids)  # the exact way, from the first check on
    computations = tables.computations(result)
    assert computations.query("computation == 'plan'")["raw"].isna().all()  # no such computation


def test_a_partial_clash_is_flagged_where_a_check_or_a_refresh_sees_it():
    """A property that shares a computation's name on only some users: the one case no
    merged answer shows. Checks spread over random users find it, here almost surely
    (40% of users have the clashing computation)."""
    with SampleServer(rate_limit=100_000, secret_key=key(), clash=True) as server:
        result = fetch(server, list(server.org.user_ids[1:401]), MERGED)
        verdict = server.org.check_split(result.profiles)
    assert verdict["wrong"] == 0, verdict
    assert tables.keys(result).set_index("key").loc["lifetime_value", "kind"] == "ambiguous"


def test_refreshes_cover_the_unsure_keys_with_few_users_then_random_ones():
    learner = names_module.NameLearner("scope-" + key(), MERGED, total=1000)
    assert learner.checks == 10 and learner.exact(0) and not learner.exact(1)
    candidates = {f"u{i}": frozenset() for i in range(1000)}
    candidates.update({"u3": frozenset({"a", "b"}), "u7": frozenset({"b"}), "u9": frozenset({"c"}),
                       "u11": frozenset({"a", "b", "c"})})
    chosen = learner.plan_refreshes(candidates, asked=1)
    assert chosen[0] == "u11" and len(chosen) == 9  # one user covers a, b and c; 1 + 9 = 10 asked apart
    again = names_module.NameLearner("scope-" + key(), MERGED, total=1000).plan_refreshes(candidates, asked=1)
    assert again[0] == "u11" and set(again[1:]) != set(chosen[1:])  # random users, not the first ones
    assert max(int(u[1:]) for u in chosen[1:]) > 100
    assert names_module.NameLearner("scope", amp.ProfileQuery(amp_props=True), total=1000).checks == 0


# -- names kept ----------------------------------------------------------------------------------
def test_names_are_kept_per_scope_in_the_cache_for_the_next_process(org, tmp_path):
    ids = list(org.org.user_ids[1:41])
    fetch(org, ids, MERGED, cache=tmp_path / "c.sqlite")
    scope = org.client().scope
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        known = cache.names(scope)
        assert {"computed-prop-1", "orders_90d"} <= known.computations and "plan" in known.properties
        assert "computation: " in known.how["orders_90d"] and "2" in known.how["orders_90d"]
        assert cache.names("another scope") == ComputationNames()
    names_module._known.clear()  # as a new process would start
    org.reset_arrivals()
    fetch(org, list(org.org.user_ids[41:61]), MERGED, cache=tmp_path / "c.sqlite")
    # The first user checks what the cache knew; the rest need no learning from scratch.
    assert 20 < len(org.arrivals) <= 20 + checks(20) + 3


def test_entries_cached_the_two_request_way_are_still_used(org, tmp_path):
    ids = list(org.org.user_ids[1:31])
    query = amp.ProfileQuery(recs=("home-feed",), amp_props=True, computations=True)
    with pytest.warns(amp.ExposureWarning):
        old = fetch(org, ids, query.split(), cache=tmp_path / "c.sqlite")  # as older amptools did
    org.reset_arrivals()
    again = fetch(org, ids, query, cache=tmp_path / "c.sqlite")
    assert org.arrivals == [] and again.from_cache == len(ids)
    pd.testing.assert_frame_equal(tables.properties(again), tables.properties(old))
    pd.testing.assert_frame_equal(comparable(tables.computations(again)),
                                  comparable(tables.computations(old)))


def test_a_name_both_a_property_and_a_computation_is_flagged():
    names = ComputationNames(frozenset({"ltv", "orders"}), frozenset({"plan", "ltv"}))
    body = {"userData": {"user_id": "u", "amp_props": {"plan": "pro", "ltv": "10", "orders": "2", "new": "x",
                                                       "n": 3}}}
    profile = amp.UserProfile.from_json(body, MERGED, names)
    assert profile.key_kinds == {"plan": "property", "ltv": "ambiguous", "orders": "computation",
                                 "new": "unverified", "n": "property"}
    # Unclear keys are in both places, flagged in both tables.
    assert profile.amp_props == {"plan": "pro", "ltv": "10", "new": "x", "n": 3}
    assert profile.computations == {"ltv": "10", "orders": "2", "new": "x"}
    frame = tables.computations([profile]).set_index("computation")
    assert frame.loc["ltv", "ambiguous"] and not frame.loc["orders", "ambiguous"]
    assert list(frame["kind"]) == ["ambiguous", "computation", "unverified"]
    assert tables.properties([profile]).attrs["key_kinds"] == {"ltv": "ambiguous", "new": "unverified"}


def test_a_value_that_is_not_text_is_a_propertys():
    """Computations are text: a number under a computation's name is a property's value."""
    names = ComputationNames(frozenset({"score"}), frozenset())
    body = {"userData": {"user_id": "u", "amp_props": {"score": 7, "flag": True}}}
    profile = amp.UserProfile.from_json(body, MERGED, names)
    assert profile.amp_props == {"score": 7, "flag": True} and profile.computations == {}
    assert profile.key_kinds == {"score": "ambiguous", "flag": "property"}
