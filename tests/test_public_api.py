"""The public surface: __all__ is sorted, complete, and matches DESIGN.md's contract."""

from __future__ import annotations

import importlib
import inspect

import pytest

import amptools as amp


def test_all_is_sorted_and_resolves():
    assert amp.__all__ == sorted(amp.__all__)
    for name in amp.__all__:
        assert getattr(amp, name) is not None


def test_every_public_class_and_error_is_exported():
    exported = set(amp.__all__)
    for module_name in ("errors", "models", "query"):
        module = importlib.import_module(f"amptools.{module_name}")
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj):
                assert name in exported, f"amptools.{module_name}.{name} is not in amptools.__all__"


CONTRACT = {
    "tables": ["recommendations", "properties", "cohorts", "cohort_matrix", "computations",
               "propensities", "summary"],
    "metrics": ["jaccard", "rbo", "overlap_matrix", "coverage", "personalization", "drift", "drift_summary"],
    "snapshots": ["save", "list", "load"],
    "export": ["to_csv", "marketing_table"],
    "notebooks": ["build_report"],
    "widgets": ["ProfileExplorer"],
    "sample": ["SampleServer"],
    "braze": ["connected_content", "preview", "call_plan"],
    "cohorts": ["CohortClient", "connect"],
}


@pytest.mark.parametrize("module", sorted(CONTRACT))
def test_design_contract_names_exist(module):
    mod = getattr(amp, module)
    for name in CONTRACT[module]:
        assert callable(getattr(mod, name)), f"amp.{module}.{name}"
        assert name in mod.__all__


def test_client_signature_is_keyword_only_after_the_key():
    params = inspect.signature(amp.ProfileClient).parameters
    assert list(params)[0] == "secret_key"
    for name in ("base_url", "timeout", "max_retries", "rate_limit"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["rate_limit"].default == 540
    assert params["base_url"].default == amp.DEFAULT_BASE_URL == "https://profile-api.amplitude.com"


def test_cohort_client_signature_matches_the_contract():
    params = inspect.signature(amp.cohorts.CohortClient).parameters
    assert list(params)[:2] == ["api_key", "secret_key"]
    for name in ("region", "base_url", "timeout", "cache"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["region"].default == "us"
    for method in ("list_cohorts", "members", "usage", "from_env", "cohort_names"):
        assert callable(getattr(amp.cohorts.CohortClient, method))


def test_query_defaults_match_the_contract():
    q = amp.ProfileQuery()
    assert (q.recs, q.rec_type, q.amp_props, q.cohort_ids, q.computations, q.predictions,
            q.propensity_type) == ((), None, False, False, False, (), "score")


def test_get_profiles_spells_out_its_options():
    params = inspect.signature(amp.ProfileClient.get_profiles).parameters
    for name, default in (("id_type", "user_id"), ("workers", 8), ("progress", True), ("cache", None)):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY and params[name].default == default
    bulk_params = inspect.signature(amp.bulk.fetch_profiles).parameters
    assert set(bulk_params) - {"client"} == set(params) - {"self"}  # nothing hidden or lost
