"""What the docs and the notes say is what the code does (issue 20.3)."""

from __future__ import annotations

import ast
import inspect
import logging
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest

import amptools as amp
from amptools import metrics, tables
from amptools.sample import Faults
from amptools.transport import retry_delay

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


# -- the documented defaults ------------------------------------------------------------
# Test seams, not settings: the docs leave them out on purpose.
INJECTED = {"sleep", "clock", "rng"}


def keywords(arguments: str, page: str) -> dict[str, object]:
    """``name=value`` settings of a call's arguments as the docs write them, evaluated."""
    arguments = re.sub(r"(^|,)\s*\*\s*,", r"\1", arguments)  # the bare * of keyword-only settings
    arguments = re.sub(r",\s*\.\.\.\s*$", "", arguments)  # "..., ...": the rest is elsewhere
    parsed = ast.parse(f"f({arguments})", mode="eval").body
    assert isinstance(parsed, ast.Call)
    return {keyword.arg: eval(compile(ast.Expression(keyword.value), page, "eval"), {"amp": amp})
            for keyword in parsed.keywords if keyword.arg is not None}


def documented_call(page: str, call: str) -> dict[str, object]:
    """The settings and defaults a page shows for ``call(...)``: its ``text`` block, and the
    signature in its table of functions when there is one."""
    text = (DOCS / page).read_text(encoding="utf-8")
    block = re.search(rf"```text\n{re.escape(call)}\((.*?)\n```", text, re.S)
    assert block, f"docs/{page} shows no {call}(...) block"
    arguments = " ".join(line.split("#", 1)[0] for line in block[1].splitlines()).strip()
    assert arguments.endswith(")"), f"docs/{page}: the {call}(...) block does not end the call"
    documented = keywords(arguments[:-1], page)
    for row in re.findall(rf"^\| `{re.escape(call)}\((.*?)\)` \|", text, re.M):
        for name, value in keywords(row, page).items():
            assert documented.setdefault(name, value) == value, f"docs/{page} gives two defaults of {name}"
    return documented


@pytest.mark.parametrize("page, call, cls", [
    ("python-api.md", "amp.ProfileClient", amp.ProfileClient),
    ("cohorts.md", "amp.cohorts.CohortClient", amp.cohorts.CohortClient),
])
def test_every_setting_and_default_in_the_docs_is_the_signature_s(page, call, cls):
    documented = documented_call(page, call)
    parameters = {name: parameter for name, parameter in inspect.signature(cls).parameters.items()
                  if parameter.kind is inspect.Parameter.KEYWORD_ONLY and name not in INJECTED}
    assert set(documented) == set(parameters), f"docs/{page} and {call} name different settings"
    for name, default in documented.items():
        assert parameters[name].default == default, f"{call}({name}=...): docs/{page} says {default!r}"


def table(text: str, header: str) -> dict[str, str]:
    """The Markdown table under ``header`` (its first row): first cell -> the row, as text."""
    rows = text.split(header + "\n", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    return {row.split("|")[1].strip(): row for row in rows}


def test_the_profile_client_s_defaults_are_the_numbers_reliability_md_gives():
    text = (DOCS / "reliability.md").read_text(encoding="utf-8")
    bounded = table(text, "| what | bound | how |")
    # The table of both clients says the Profile client's numbers again, in its own words.
    both = {what: row.split("|")[2] for what, row in table(text, "| what | Profile client | cohort client |").items()}
    retried = table(text, "| failure | retried? |")

    def number(pattern: str, cell: str) -> float:
        found = re.search(pattern, cell)
        assert found, f"docs/reliability.md no longer says {pattern!r} in {cell!r}"
        return float(found[1])

    client = amp.ProfileClient("k" * 32)
    sum_of = re.search(r"connect \+ read timeout, (\d+) \+ (\d+) = (\d+) s", bounded["one attempt"])
    assert sum_of, "docs/reliability.md no longer gives the default deadline as connect + read"
    connect, read, deadline = sum_of.groups()
    assert client.timeout == (float(connect), float(read)) == (5, 30)
    assert client.deadline == float(deadline) == number(r"connect \+ read: (\d+) s", both["one attempt"]) == 35
    assert client.max_response_bytes == number(r"`max_response_bytes=` \((\d+) MiB\)", bounded["a body"]) * 2**20 \
        == number(r"`max_response_bytes=` (\d+) MiB", both["a body"]) * 2**20 == 8 * 2**20
    assert client.max_retries == number(r"`max_retries=` \((\d+)\)", bounded["retries"]) \
        == number(r"`max_retries=` (\d+)", both["retries"]) == 4
    throttled = next(row for what, row in retried.items() if "ThrottledError" in what)
    assert client.retry_after_cap == number(r"at most `retry_after_cap=`, (\d+) s", throttled) == 60
    # "(0.5 s, 1 s, 2 s, 4 s by default), capped at `backoff_cap=` (30 s)": one delay per retry.
    backoff = re.search(r"\(([\d.]+ s(?:, [\d.]+ s)*)\s+by default\), capped at `backoff_cap=` \((\d+) s\)", text)
    assert backoff, "docs/reliability.md no longer gives the default backoff"
    delays = [float(delay.removesuffix(" s")) for delay in backoff[1].split(", ")]
    assert [retry_delay(n, base=client.backoff_base, cap=client.backoff_cap, jitter=lambda d: d)
            for n in range(1, client.max_retries + 1)] == delays == [0.5, 1, 2, 4]
    assert client.backoff_cap == float(backoff[2]) == 30
    assert retry_delay(1, retry_after=3600, retry_after_cap=client.retry_after_cap) == 60
    assert (client.limiter.limit, client.limiter.period) == (540, 60.0)
    assert client.base_url == amp.DEFAULT_BASE_URL == "https://profile-api.amplitude.com"


def test_a_default_client_retries_as_documented(fresh_server, caplog):
    """Four retries after the first attempt, backing off 0.5, 1, 2 and 4 s (each halved at
    most by the jitter): what a default client does, not just what its signature says."""
    fresh_server.faults = Faults(server_error=1.0, seed=5)
    waits: list[float] = []
    client = fresh_server.client(sleep=waits.append)  # the backoff is recorded, not slept
    caplog.set_level(logging.INFO, logger="amptools")
    with pytest.raises(amp.ServerError) as caught:
        client.get_profile("testUser")
    assert caught.value.attempts == len(fresh_server.arrivals) == 5
    retried = [record.getMessage() for record in caplog.records if record.getMessage().startswith("retrying")]
    assert len(retried) == len(waits) == 4
    for n, wait in enumerate(waits, start=1):
        assert 0.5 * 2 ** (n - 1) / 2 <= wait <= 0.5 * 2 ** (n - 1)
