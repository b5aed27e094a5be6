"""One request per user, whatever is asked (issue 10): counted at the real sample server.

Each test runs its own sample org with a key of its own, so the computation names
this process learned in other tests do not count here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pandas as pd
import pytest

import amptools as amp
from amptools import models, tables
from amptools.bulk import NAME_PROBES, NAME_REFRESHES
from amptools.cache import ProfileCache
from amptools.models import ComputationNames
from amptools.sample import SampleServer

UNLIMITED = {"rate_limit": 100_000}
N = 60


@pytest.fixture
def org() -> Iterator[SampleServer]:
    with SampleServer(rate_limit=100_000, secret_key="one-request-" + os.urandom(6).hex()) as server:
        yield server


def fetch(server: SampleServer, ids: list[str], query: amp.ProfileQuery, **options: object) -> amp.bulk.ProfileSet:
    return server.client(**UNLIMITED).get_profiles(ids, query, progress=False, workers=8, **options)


SHAPES = {
    "recs": amp.ProfileQuery(recs=("home-feed", "similar-items")),
    "properties": amp.ProfileQuery(amp_props=True),
    "cohorts": amp.ProfileQuery(cohort_ids=True),
    "all computations": amp.ProfileQuery(computations=True),
    "listed computations": amp.ProfileQuery(computations=("orders_90d", "revenue_90d")),
    "predictions": amp.ProfileQuery(predictions=("0x2a7c",)),
    "properties + listed computations": amp.ProfileQuery(amp_props=True, computations=("orders_90d",)),
    "properties + all computations": amp.ProfileQuery(amp_props=True, computations=True),
    "everything": amp.ProfileQuery(recs=("home-feed",), amp_props=True, cohort_ids=True,
                                   computations=True, predictions=("0x2a7c", "0x3f1e")),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_requests_per_user_for_every_query_shape(org, shape):
    query = SHAPES[shape]
    ids = list(org.org.user_ids[1:N + 1])
    with pytest.warns() if query.recs else _no_warning():
        first = fetch(org, ids, query)
    assert first.ok == N
    if not query.needs_computation_names:
        assert len(org.arrivals) == N  # one request per user
        return
    # Learning the org's computation names costs NAME_PROBES requests, once, and a key
    # known neither as a computation nor as a property at most NAME_REFRESHES a run.
    assert N + NAME_PROBES <= len(org.arrivals) <= N + NAME_PROBES + NAME_REFRESHES
    org.reset_arrivals()
    more = list(org.org.user_ids[N + 1:2 * N + 1])
    with pytest.warns() if query.recs else _no_warning():
        fetch(org, more, query)
    assert N <= len(org.arrivals) <= N + NAME_REFRESHES  # names known: no probes


def _no_warning():
    import contextlib

    return contextlib.nullcontext()


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user_id", *frame.columns[2:3]]).reset_index(drop=True)


def test_one_request_separates_exactly_as_two_requests_on_the_synthetic_org(org):
    ids = list(org.org.user_ids[1:201])
    query = amp.ProfileQuery(amp_props=True, cohort_ids=True, computations=True)
    merged = fetch(org, ids, query)
    merged_requests = len(org.arrivals)
    org.reset_arrivals()
    split = fetch(org, ids, query.split())
    assert len(org.arrivals) == 2 * len(ids)
    assert len(ids) + NAME_PROBES <= merged_requests <= len(ids) + NAME_PROBES + NAME_REFRESHES
    merged_comps, split_comps = tables.computations(merged), tables.computations(split)
    assert merged_comps["raw"].isna().any()  # users that lack some computations are in it
    assert not merged_comps["ambiguous"].any()
    pd.testing.assert_frame_equal(comparable(merged_comps), comparable(split_comps))
    pd.testing.assert_frame_equal(tables.properties(merged), tables.properties(split))


def test_a_computation_the_names_do_not_know_is_learned_and_every_profile_read_again(org, tmp_path):
    ids = list(org.org.user_ids[1:81])
    query = amp.ProfileQuery(amp_props=True, computations=True)
    split = fetch(org, ids, query.split())
    org.reset_arrivals()
    # The cache knows the org's names from an older run, before orders_90d existed.
    first = split.profiles[0]
    names = ComputationNames.from_split([first.raw, first.raw_computations])
    stale = ComputationNames(names.computations - {"orders_90d"}, names.properties)
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        cache.save_names(stale, scope=org.client().scope)
        merged = fetch(org, ids, query, cache=cache)
        learned = cache.names(org.client().scope)
    assert "orders_90d" in learned.computations
    refreshes = [a for a in org.arrivals if "get_amp_props" not in a.params]
    assert 1 <= len(refreshes) <= NAME_REFRESHES and len(org.arrivals) == len(ids) + len(refreshes)
    pd.testing.assert_frame_equal(comparable(tables.computations(merged)),
                                  comparable(tables.computations(split)))
    pd.testing.assert_frame_equal(tables.properties(merged), tables.properties(split))


def test_names_are_kept_per_scope_in_the_cache_for_the_next_process(org, tmp_path):
    ids = list(org.org.user_ids[1:21])
    query = amp.ProfileQuery(amp_props=True, computations=True)
    fetch(org, ids, query, cache=tmp_path / "c.sqlite")
    scope = org.client().scope
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        assert len(cache.names(scope).computations) == 6
        assert cache.names("another scope") == ComputationNames()
    models._KNOWN_NAMES.clear()  # as a new process would start
    org.reset_arrivals()
    fetch(org, list(org.org.user_ids[21:41]), query, cache=tmp_path / "c.sqlite")
    assert len(org.arrivals) == 20  # no probes: the cache knew the names


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
    body = {"userData": {"user_id": "u", "amp_props": {"plan": "pro", "ltv": "10", "orders": "2"}}}
    profile = amp.UserProfile.from_json(body, amp.ProfileQuery(amp_props=True, computations=True), names)
    frame = tables.computations([profile]).set_index("computation")
    assert frame.loc["ltv", "ambiguous"] and not frame.loc["orders", "ambiguous"]
