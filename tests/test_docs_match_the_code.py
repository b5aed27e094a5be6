"""What the docs and the notes say is what the code does (issue 20.3)."""

from __future__ import annotations

import inspect

import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

import amptools as amp
from amptools import metrics, tables

DOCS = Path(__file__).resolve().parent.parent / "docs"


def exposure_notes(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, amp.ExposureWarning)]


def test_the_exposure_note_advises_a_cache_only_to_a_run_without_one(sample_server, tmp_path):
    ids = ["testUser", *sample_server.org.user_ids[1:4]]
    [without] = exposure_notes(lambda: sample_server.client().get_profiles(ids, recs=("home-feed",),
                                                                           progress=False))
    assert "cache='profiles.sqlite'" in without and "--cache" in without
    [with_cache] = exposure_notes(lambda: sample_server.client().get_profiles(
        ids, recs=("home-feed",), progress=False, cache=tmp_path / "c.sqlite"))
    assert "cache=" not in with_cache and "your cache keeps their answers" in with_cache
    # All in the cache: no request asks for recommendations, so nothing is logged or said.
    assert exposure_notes(lambda: sample_server.client().get_profiles(
        ids, recs=("home-feed",), progress=False, cache=tmp_path / "c.sqlite")) == []
    [one] = exposure_notes(lambda: sample_server.client().get_profile("testUser", recs=("home-feed",)))
    assert "cache='profiles.sqlite'" in one


def _return_types() -> dict[str, str]:
    """docs/vocabulary.md's "One return type per function": metrics function -> first word of its return."""
    text = (DOCS / "vocabulary.md").read_text(encoding="utf-8")
    section = text.split("## One return type per function", 1)[1].split("\n## ", 1)[0]
    return {match[1]: match[2] for match in re.finditer(r"^\| `metrics\.(\w+)\(.*?\)` \| (\w+)", section, re.M)}


def test_the_documented_return_type_of_each_metric_is_the_one_it_returns(sample_server):
    documented = _return_types()
    assert {"coverage", "personalization", "overlap_matrix"} <= set(documented)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", amp.ExposureWarning)
        ps = sample_server.client(rate_limit=100_000).get_profiles(
            list(sample_server.org.user_ids[:30]), recs=("home-feed", "similar-items"), progress=False)
    recs = tables.recommendations(ps)
    kinds = {"DataFrame": pd.DataFrame, "Series": pd.Series, "float": float}
    for name, kind in documented.items():
        function = getattr(metrics, name)
        # Metrics of change over time compare two tables (before, after).
        result = function(recs, recs) if "after" in inspect.signature(function).parameters else function(recs)
        assert isinstance(result, kinds[kind]), f"metrics.{name} returns {type(result).__name__}, docs say {kind}"
    # coverage: an overall row, then one per recommendation source (not per rec set).
    coverage = metrics.coverage(recs)
    assert coverage["group_by"].tolist()[0] == "overall"
    assert set(coverage["group_by"].iloc[1:]) == {"recommendation_source"}
    assert set(coverage["group"].iloc[1:]) == set(recs["recommendation_source"].unique())


def test_what_tables_md_says_of_test_users_home_feed(sample_server):
    text = (DOCS / "tables.md").read_text(encoding="utf-8")
    assert "`testUser`, who has no `home-feed` set" in text
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", amp.ExposureWarning)
        ps = sample_server.client().get_profiles(["testUser"], recs=("home-feed",), progress=False)
    assert ps.profiles[0].recommendations == ()  # no set at all, rather than an empty one
    summary = tables.summary(ps).iloc[0]
    assert bool(summary["has_recommendations"]) and summary["n_recommendation_sets"] == 0
    assert tables.recommendations(ps).empty


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_every_table_of_a_page_is_unbroken(page):
    """A table row, then a paragraph, then rows again: Markdown ends the table at the paragraph."""
    blocks = re.split(r"\n\s*\n", (DOCS / page).read_text(encoding="utf-8"))
    for block in blocks:
        lines = block.strip().splitlines()
        rows = [line.startswith("|") for line in lines]
        if any(rows) and not all(rows):
            raise AssertionError(f"docs/{page}: a table is broken by text:\n{block}")
