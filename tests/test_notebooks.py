"""Every tour notebook runs top to bottom with a real kernel, offline, on the sample org."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def run_notebook(path: Path, workdir: Path, timeout: int = 240) -> nbformat.NotebookNode:
    """Execute ``path`` in ``workdir`` with a fresh kernel; return the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return nb


def outputs_text(nb: nbformat.NotebookNode) -> str:
    return json.dumps([cell.get("outputs", []) for cell in nb.cells])


@pytest.fixture
def offline(monkeypatch):
    """No key: the kernel (which inherits this environment) must use the sample org."""
    for name in ("AMPLITUDE_SECRET_KEY", "AMPTOOLS_USER_ID", "AMPTOOLS_REC_IDS", "AMPTOOLS_IDS_FILE"):
        monkeypatch.delenv(name, raising=False)


# What each notebook must show once it has run: things only a working run produces.
EXPECTED = {
    "01_quickstart": ["chocolate milk", "bulgogi", "UnknownUserError", "'computed-prop-2': '3'",
                      "0x10x", "1 for the next",  # properties and computations: one request
                      "budget shared on this machine"],
    "02_compare_recommendations": ["application/vnd.plotly.v1+json", "Rank-biased", "two-tower-v1"],
    "03_cohorts_and_computations": ["application/vnd.plotly.v1+json", "orders_90d", "cohort1",
                                    "All active users: ", "Power users", "downloads_this_month"],
    "04_marketing_export": ["(True, 301, 300)", "include_pii", "report.ipynb",
                            "'country' is Braze's default attribute", "external_id,device_id,rec_id",
                            "['braze_import.csv']", "users per request: [75, 75, 75, 75]", "'rec_items': ["],
    "05_explorer": ["application/vnd.jupyter.widget-view+json"],
    "07_over_time": ["similar-items", "Items that entered and left", "How far items moved",
                     "from snapshot to snapshot", "Cohort membership between two snapshots", "day 3",
                     "home-feed: 17.8% of 287 users' lists changed", "<ProfileSet 300 ok",
                     "wrote drift.html", "application/vnd.jupyter.widget-view+json", "'joined'"],
    "06_connected_content": [":auth_credentials amplitude_profile_api", "not-a-customer-1",
                             "Profile API call failed", "control group", "(end of the template)",
                             "not fetched with: get_cohort_ids", "'recommended_rate': 270",
                             "0 throttled minutes"],
}
MIN_FIGURES = {"02_compare_recommendations": 7, "03_cohorts_and_computations": 7,
               "06_connected_content": 2, "07_over_time": 4}
# Notebooks whose fetch takes long enough to need a bar: a notebook-native one (a widget)
# with the ETA the pace gives.
SHOW_PROGRESS = {"02_compare_recommendations", "03_cohorts_and_computations", "04_marketing_export",
                 "06_connected_content"}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def progress_bars(nb: nbformat.NotebookNode) -> list[str]:
    """The text of every progress bar a notebook showed (tqdm's widget, with its text form)."""
    return [output["data"].get("text/plain", "") for cell in nb.cells for output in cell.get("outputs", [])
            if WIDGET_MIME in output.get("data", {})
            and output["data"].get("text/plain", "").startswith("profiles:")]


def test_there_are_tour_notebooks():
    assert len(NOTEBOOKS) >= 5, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, offline):
    shutil.copy(path, tmp_path / path.name)
    nb = run_notebook(tmp_path / path.name, tmp_path)
    text = outputs_text(nb)
    assert '"output_type": "error"' not in text
    assert "embedded sample org" in text  # it said, once, which org it used
    assert text.count("embedded sample org") == 1
    for expected in EXPECTED.get(path.stem, []):
        assert expected in text, f"{path.name}: {expected!r} not in its outputs"
    figures = text.count('"application/vnd.plotly.v1+json"')
    assert figures >= MIN_FIGURES.get(path.stem, 0), f"{path.name}: only {figures} figures"
    if path.stem in SHOW_PROGRESS:
        bars = progress_bars(nb)
        assert bars, f"{path.name}: its fetch showed no progress bar"
        assert all("ETA" in bar and "/min" in bar for bar in bars), bars
