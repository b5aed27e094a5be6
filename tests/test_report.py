"""build_report writes a notebook a colleague can re-run; executing it works offline."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import amptools as amp
from amptools.notebooks import DEMO_QUERY, PLOTLY_MIME, build_report, execute_report

CHROMIUM = Path("/usr/bin/chromium")


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
    assert "Plotly.newPlot" in html and "user-000001" in html  # the HTML copy stays interactive
    # The fetch's bar helps whoever runs the report; frozen at "0/40" in the file, it is dropped.
    assert "profiles:" not in outputs and "widget-view" not in outputs
    # Beside each figure's JSON a copy GitHub and nbviewer show: a PNG (kaleido), else HTML.
    static = "image/png" if CHROMIUM.exists() else "text/html"
    for figure in figures:
        assert static in figure["data"], sorted(figure["data"])
    if static == "image/png":
        for figure in figures:
            assert base64.b64decode(figure["data"]["image/png"])[:8] == b"\x89PNG\r\n\x1a\n"
            assert "text/html" not in figure["data"]  # its script would show GitHub a blank box
        assert "window.PlotlyConfig" not in outputs  # nor is the 5 MB plotly.js loader kept
        assert path.stat().st_size < 2_000_000


def _figure_notebook() -> nbformat.NotebookNode:
    """A notebook as a kernel leaves it after showing one figure with plotly's own mime type."""
    import plotly.graph_objects as go
    import plotly.io as pio

    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(go.Figure(go.Bar(x=["a", "b"], y=[3, 4])))
    output = nbformat.v4.new_output("display_data", data=bundle)
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig", outputs=[output])])


@pytest.mark.slow
def test_a_figure_gets_a_png_beside_its_json():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: kaleido needs a browser to render PNGs")
    notebook = _figure_notebook()
    assert amp.notebooks.add_static_figures(notebook) == "png"
    data = notebook.cells[0].outputs[0]["data"]
    assert PLOTLY_MIME in data and base64.b64decode(data["image/png"])[:4] == b"\x89PNG"
    nbformat.validate(notebook)


def test_without_kaleido_a_figure_gets_an_html_copy_and_a_warning(tmp_path):
    path = tmp_path / "fig.ipynb"
    nbformat.write(_figure_notebook(), path)
    # kaleido not installed: what a user without the test extras has.
    script = ("import sys, warnings, nbformat\n"
              "sys.modules['kaleido'] = None\n"
              "import amptools as amp\n"
              f"nb = nbformat.read({str(path)!r}, as_version=4)\n"
              "with warnings.catch_warnings(record=True) as caught:\n"
              "    warnings.simplefilter('always')\n"
              "    print(amp.notebooks.add_static_figures(nb))\n"
              "print(sorted(nb.cells[0].outputs[0]['data']))\n"
              "print([str(w.message) for w in caught])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    kind, keys, warned = done.stdout.splitlines()
    assert kind == "html"
    assert PLOTLY_MIME in keys and "text/html" in keys and "image/png" not in keys
    assert "GitHub will not show them" in warned and "pip install kaleido" in warned
