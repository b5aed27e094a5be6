"""build_report writes a notebook a colleague can re-run; executing it works offline."""

from __future__ import annotations

import json

import nbformat
import pytest

import amptools as amp
from amptools.notebooks import DEMO_QUERY, build_report, execute_report


def code_sources(nb):
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def test_report_structure_follows_the_query(tmp_path):
    path = build_report(tmp_path / "r.ipynb", ["testUser", "user-000001"], DEMO_QUERY,
                        title="Q3 review", cache="c.sqlite")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = tagged[0].source
    assert "IDS = ['testUser', 'user-000001']" in params and "CACHE = 'c.sqlite'" in params
    assert nb.cells[0].source.startswith("# Q3 review")
    assert "exposure" in nb.cells[0].source  # the query asks for recommendations
    code = "\n".join(code_sources(nb))
    for call in ("rec_overlap_heatmap", "cohort_upset", "computation_distribution",
                 "propensity_distribution", "tables.properties"):
        assert call in code
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")

    only_cohorts = nbformat.read(build_report(tmp_path / "c.ipynb", ["testUser"],
                                              amp.ProfileQuery(cohort_ids=True)), as_version=4)
    code = "\n".join(code_sources(only_cohorts))
    assert "cohort_sizes" in code and "recommendations" not in code and "exposure" not in only_cohorts.cells[0].source


def test_bad_ids_are_refused_before_a_report_is_written(tmp_path):
    with pytest.raises(amp.InvalidQueryError, match="not valid"):
        build_report(tmp_path / "r.ipynb", ["ok", None, 3.5, ""], amp.ProfileQuery(cohort_ids=True))
    assert not (tmp_path / "r.ipynb").exists()


@pytest.mark.slow
def test_the_key_never_enters_a_report_even_after_it_ran(tmp_path, monkeypatch):
    from amptools.sample import SampleServer

    canary = "CANARY-report-key-91c2"
    with SampleServer(secret_key=canary) as server:
        monkeypatch.setenv("AMPLITUDE_SECRET_KEY", canary)
        monkeypatch.setenv("AMPLITUDE_PROFILE_API_URL", server.url)
        ids = ["testUser", "not-a-user", *server.org.user_ids[1:6]]
        path = build_report(tmp_path / "r.ipynb", ids, DEMO_QUERY, cache="c.sqlite")
        written = execute_report(path, html=True)
        assert len(server.arrivals) > 0  # the report really used this keyed server
    for item in [*written, *tmp_path.glob("c.sqlite*")]:
        assert canary.encode() not in item.read_bytes(), item.name
    assert "using the Amplitude Profile API" in path.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_generated_report_runs_through_the_cache_and_exports_html(tmp_path, monkeypatch, sample_server):
    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    ids = list(sample_server.org.user_ids[:40])
    # Fill the cache first: the report must then ask its own server for nothing.
    sample_server.client().get_profiles(ids, query=DEMO_QUERY, cache=tmp_path / "c.sqlite",
                                        progress=False)
    path = build_report(tmp_path / "r.ipynb", ids, DEMO_QUERY, cache="c.sqlite", sample=True)
    written = execute_report(path, html=True)
    assert written == [path, path.with_suffix(".html")]
    nb = nbformat.read(path, as_version=4)
    outputs = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert '"output_type": "error"' not in outputs
    assert "40 ok, 0 not_found, 0 failed of 40 ids, 40 from cache" in outputs
    figures = [o for c in nb.cells for o in c.get("outputs", [])
               if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) >= 8
    html = path.with_suffix(".html").read_text(encoding="utf-8")
    assert "Plotly.newPlot" in html and "user-000001" in html
