"""Shareable analysis notebooks: :func:`build_report` writes one with nbformat.

The report is a plain notebook a colleague can open and re-run: a parameters
cell tagged ``parameters`` (papermill-style), a short narrative, a fetch through
the cache (so re-running asks the service for nothing it already has), then the
tables and figures that fit what the query asked for. It holds no key: the
client comes from ``amp.connect()`` (``AMPLITUDE_SECRET_KEY``, else the sample org).
This module composes the rest of amptools and holds no analysis of its own.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ._types import PathLike
from .bulk import ProfileSet, unique_ids
from .errors import AmptoolsWarning, InvalidQueryError, warn
from .query import ProfileQuery

__all__ = ["DEMO_QUERY", "OUTCOME_KEY", "add_static_figures", "build_report", "execute_report",
           "fetch_outcome", "show_fetch"]

# Beyond this many ids the list goes to a CSV beside the notebook, not into it.
INLINE_IDS = 1000
DEMO_QUERY = ProfileQuery(
    recs=("home-feed", "similar-items", "email-picks"), amp_props=True, cohort_ids=True,
    computations=True, predictions=("0x2a7c", "0x3f1e"), propensity_type="score",
)
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
PLOTLY_MIME = "application/vnd.plotly.v1+json"
#: Where a report keeps its fetch's outcome: a key of the metadata of the fetch's output.
OUTCOME_KEY = "amptools.fetch"


def _markdown_text(text: str) -> str:
    """``text`` shown literally in a Markdown cell: no HTML tag, link or emphasis survives.

    Titles and ids come from users (a rec id, a ``--title``); in a report's HTML an
    unescaped ``<img onerror=...>`` would run in the reader's browser.
    """
    return re.sub(r"([\\`*_\[\]()#!|~])", r"\\\1", html.escape(text, quote=True))


def _parameters(path: Path, ids: list[str], query: ProfileQuery, id_type: str,
                cache: str | None, sample: bool, fetch: dict[str, object]) -> str:
    if len(ids) > INLINE_IDS:
        ids_file = path.with_suffix(".ids.csv")
        with ids_file.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([id_type])
            writer.writerows([i] for i in ids)
        # Read back in the next cell, after pandas is imported.
        ids_line = f"IDS_FILE = {ids_file.name!r}  # {len(ids):,} ids, one per row\nIDS = None"
    else:
        ids_line = f"IDS_FILE = None\nIDS = {ids!r}"
    query_dict = json.loads(query.canonical())
    return "\n".join([
        "# Parameters: change them and re-run every cell.",
        ids_line,
        f"ID_TYPE = {id_type!r}",
        f"QUERY = {query_dict!r}",
        f"CACHE = {cache!r}  # SQLite file: re-running fetches nothing it already holds",
        f"SAMPLE = {sample!r}  # True: the embedded sample org, whatever the environment says",
        f"FETCH = {fetch!r}  # how to fetch: workers, max_age (seconds), rate_limit (per minute)",
    ])


def build_report(
    path: PathLike,
    ids: Iterable[str],
    query: ProfileQuery,
    *,
    title: str | None = None,
    cache: PathLike | None = None,
    id_type: str = "user_id",
    sample: bool = False,
    workers: int = 8,
    max_age: float | None = None,
    rate_limit: int | None = None,
) -> Path:
    """Write an analysis notebook for ``ids`` and ``query``; return its path.

    Parameters
    ----------
    path : path
        Where to write the ``.ipynb``.
    ids : iterable of str
        The users to analyse. More than 1,000 go to ``<name>.ids.csv`` beside it.
    query : ProfileQuery
        What to fetch; the report shows the tables and figures that fit it.
    title : str, optional
        The heading; "Profile report" by default.
    cache : path, optional
        The SQLite cache the report fetches through, relative to the notebook.
    id_type : {"user_id", "device_id"}
    sample : bool
        Run on the embedded sample org even when a key is set.
    workers, max_age, rate_limit
        How the report fetches: parallel requests, the age in seconds after which a
        cached answer is fetched again (None: any age), requests per minute (None:
        the client's default).

    Returns
    -------
    pathlib.Path
        The notebook's path. It is stored without outputs; run it with
        :func:`execute_report` or open it in JupyterLab.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = unique_ids(ids, id_type)  # refuses blank, None and float ids before writing anything
    if max_age is not None and not (isinstance(max_age, (int, float)) and math.isfinite(max_age)
                                    and max_age >= 0):
        raise InvalidQueryError(f"max_age must be finite seconds ≥ 0 (or None), got {max_age!r}.")
    fetch: dict[str, object] = {"workers": workers, "max_age": max_age}
    if rate_limit is not None:
        fetch["rate_limit"] = rate_limit
    title = title or "Profile report"
    asked = []
    if query.recs:
        asked.append(f"recommendation sets {', '.join(query.recs)}")
    if query.amp_props:
        asked.append("user properties")
    if query.cohort_ids:
        asked.append("cohort membership")
    if query.asks_computations:
        asked.append("computed properties")
    if query.predictions:
        asked.append(f"propensities ({query.propensity_type}) for {', '.join(query.predictions)}")
    cache_text = str(cache) if cache is not None else None

    cells = [
        new_markdown_cell(
            f"# {_markdown_text(title)}\n\nThis report fetches {len(ids):,} users' profiles from the "
            f"Amplitude User Profile API — {_markdown_text(', '.join(asked)) or 'ids only'} — and "
            "turns them into tables "
            "and figures. Re-run it top to bottom (Run → Run All Cells) to refresh it; with a "
            "cache, users already fetched are not asked for again."
            + ("\n\n**Recommendations:** fetching them logs an exposure event in Amplitude for "
               "every user not yet in the cache." if query.recs else "")
        ),
        new_code_cell(_parameters(path, ids, query, id_type, cache_text, sample, fetch),
                      metadata={"tags": ["parameters"]}),
        new_code_cell(
            "import pandas as pd\nimport plotly.io as pio\n\nimport amptools as amp\n\n"
            "# Figures show in JupyterLab and stay visible in an HTML export.\n"
            'pio.renderers.default = "plotly_mimetype+notebook"\n'
            "if IDS_FILE:  # ids kept as text: leading zeros and 'NA' stay ids\n"
            "    IDS = pd.read_csv(IDS_FILE, dtype=str, keep_default_na=False)[ID_TYPE].tolist()\n"
            "options = {'rate_limit': FETCH['rate_limit']} if FETCH.get('rate_limit') else {}\n"
            "client = amp.connect(sample=True if SAMPLE else None, **options)\n"
            "query = amp.ProfileQuery(**QUERY)\n"
            "profiles = client.get_profiles(IDS, query=query, id_type=ID_TYPE, cache=CACHE,\n"
            "                               workers=FETCH['workers'], max_age=FETCH['max_age'])\n"
            "amp.notebooks.show_fetch(profiles)  # the ProfileSet, and who was not fetched for `amptools report`"
        ),
        new_markdown_cell("## Who came back\n\nOne row per user: what the service returned and "
                          "how many of each thing. Users it does not know, or that failed, are "
                          "listed with the reason."),
        new_code_cell("summary = amp.tables.summary(profiles)\n"
                      "summary.groupby('status').size().rename('users').to_frame()"),
        new_code_cell("profiles.failures.head(20)"),
    ]
    if query.recs:
        cells += [
            new_markdown_cell("## Recommendation sets\n\nOne row per user, set and item; `rank` "
                              "is the position in the list. Users in the control group "
                              "(`is_control`) see random items, so they are compared apart."),
            new_code_cell("recs = amp.tables.recommendations(profiles)\nrecs.head(12)"),
            new_code_cell("amp.metrics.coverage(recs)"),
            new_code_cell("amp.plots.item_frequency(recs)"),
            new_code_cell("amp.plots.control_vs_treatment(recs)"),
            new_code_cell("amp.plots.long_tail(recs)"),
        ]
        if len(query.recs) > 1:
            cells += [
                new_markdown_cell("How similar are the sets for the same users? Jaccard counts "
                                  "shared items; rank-biased overlap weights the top of the lists."),
                new_code_cell("amp.plots.rec_overlap_heatmap(recs, metric='rbo')"),
                new_code_cell(
                    "first_user = recs['user_id'].iloc[0]\n"
                    "amp.plots.user_lists(recs, user_id=first_user)"
                ),
            ]
    if query.cohort_ids:
        cells += [
            new_markdown_cell("## Cohorts\n\nOnly cohorts set up for tracking are returned."),
            new_code_cell("cohorts = amp.tables.cohorts(profiles)\namp.plots.cohort_sizes(cohorts)"),
            new_code_cell("amp.plots.cohort_overlap(cohorts)"),
            new_code_cell("amp.plots.cohort_upset(cohorts)"),
        ]
    if query.amp_props:
        cells += [
            new_markdown_cell("## User properties\n\nOne row per user. `gp:` properties are custom "
                              "ones; some (e-mail, names) are personal data — handle with care."),
            new_code_cell("amp.tables.properties(profiles).head(10)"),
        ]
    if query.asks_computations:
        cells += [
            new_markdown_cell("## Computed properties\n\nThe API returns them as text; `value` is "
                              "the number where the text is one, and `raw` keeps the original."),
            new_code_cell("comps = amp.tables.computations(profiles)\n"
                          "comps.groupby('computation', observed=True)['value'].describe()"),
            new_code_cell(
                "first_computation = comps['computation'].dropna().iloc[0]\n"
                "amp.plots.computation_distribution(comps, computation=first_computation"
                + (", groups=cohorts, color='cohort_id', kind='box')" if query.cohort_ids else ")")
            ),
        ]
    if query.predictions:
        cells += [
            new_markdown_cell("## Propensities"),
            new_code_cell("props = amp.tables.propensities(profiles)\n"
                          "amp.plots.propensity_distribution(props"
                          + (", groups=cohorts, color='cohort_id')" if query.cohort_ids else ")")),
        ]
    notebook = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC,
                                                   "language_info": {"name": "python"},
                                                   "title": html.escape(title)})
    nbformat.validate(notebook)
    nbformat.write(notebook, path)
    return path


def execute_report(path: PathLike, *, html: bool = False,
                   timeout: int = 600) -> list[Path]:
    """Run the notebook at ``path`` in place (a real kernel); optionally write HTML beside it.

    Returns the paths written: the executed notebook and, with ``html``, a
    self-contained ``.html`` (plotly's JavaScript is embedded, no network needed).
    """
    import zmq
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from traitlets.config import Config

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    # Without CurveZMQ keys ipykernel warns on stderr that the kernel "is running over TCP
    # without encryption". Kernel managers that can provision the keys (newer jupyter_client,
    # pyzmq built with curve) do so when asked; with older ones the line may still show.
    config = Config()
    if "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve"):
        config.KernelManager.transport_encryption = "auto"
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", config=config,
                   resources={"metadata": {"path": str(path.parent.resolve())}}).execute()
    body = None
    if html:  # from the interactive figures, before they get their static copies
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(notebook)
    _drop_progress_bars(notebook)
    add_static_figures(notebook)
    nbformat.write(notebook, path)
    written = [path]
    if body is not None:
        html_path = path.with_suffix(".html")
        html_path.write_text(body, encoding="utf-8")
        written.append(html_path)
    return written


def show_fetch(profiles: ProfileSet) -> None:
    """Show a ProfileSet in a notebook, with its outcome in the output's metadata.

    The metadata (under :data:`OUTCOME_KEY`: the counts and the first 20 users not
    fetched) is invisible in the notebook; :func:`fetch_outcome` reads it back from the
    executed file, so ``amptools report --execute`` exits 1 when users were not fetched.
    """
    from IPython.display import display

    not_fetched = [
        {"id": row.user_id if isinstance(row.user_id, str) else row.device_id,
         "status": str(row.status), "error": row.error if isinstance(row.error, str) else None}
        for row in profiles.failures.head(20).itertuples(index=False)
    ]
    counts = {status: int(n) for status, n in profiles.counts.items()}
    outcome = {OUTCOME_KEY: {"counts": counts, "not_fetched": not_fetched}}
    display(profiles, metadata=outcome)  # type: ignore[no-untyped-call]


def fetch_outcome(path: PathLike) -> dict[str, Any] | None:
    """The outcome :func:`show_fetch` left in an executed notebook: ``{"counts": {status: n},
    "not_fetched": [{"id", "status", "error"}, …]}``, or None when it holds none."""
    notebook = nbformat.read(Path(path), as_version=4)
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else ():
            outcome = output.get("metadata", {}).get(OUTCOME_KEY)
            if isinstance(outcome, dict):
                return dict(outcome)
    return None


def add_static_figures(notebook: nbformat.NotebookNode) -> str:
    """Give every figure of an executed notebook a copy that GitHub and nbviewer show.

    A saved figure is plotly's JSON, which only JupyterLab draws, and an HTML copy whose
    script GitHub strips. Beside the JSON each figure gets a PNG (kaleido, which needs
    a Chrome or Chromium), which then replaces the HTML copy and the plotly.js it
    needed; without kaleido or a browser, each figure keeps (or gets) an HTML copy
    instead, and an :class:`~amptools.errors.AmptoolsWarning` says so. JupyterLab
    still draws the JSON, interactive.

    Parameters
    ----------
    notebook : nbformat.NotebookNode
        An executed notebook; changed in place.

    Returns
    -------
    str
        ``"png"`` or ``"html"``: what the figures carry now.
    """
    figures = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", []) if PLOTLY_MIME in output.get("data", {})]
    if not figures:
        return "png"
    specs = [{key: output["data"][PLOTLY_MIME].get(key, {}) for key in ("data", "layout")}
             for output in figures]
    try:
        images = _render_png(specs)
    except Exception as error:  # no kaleido, no browser: the report must not be lost for it
        import plotly.io as pio

        for output, spec in zip(figures, specs):
            output["data"].setdefault("text/html", pio.to_html(spec, full_html=False,
                                                               include_plotlyjs="cdn"))
        warn(f"the report's figures carry no PNG copy ({type(error).__name__}: {str(error)[:200]}), "
             "so GitHub will not show them (nbviewer and JupyterLab do). pip install kaleido, "
             "and install Chrome or Chromium, to add one.", AmptoolsWarning)
        return "html"
    for output, png in zip(figures, images):
        output["data"]["image/png"] = base64.b64encode(png).decode("ascii")
        output["data"].pop("text/html", None)
    for cell in notebook.cells:  # the plotly.js loader only the HTML copies needed (~5 MB)
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.get("outputs", []) if not _is_plotly_loader(output)]
    return "png"


def _drop_progress_bars(notebook: nbformat.NotebookNode) -> None:
    """Drop the fetch's progress bar from an executed notebook: a widget whose text form
    froze at its start ("0/40") says nothing to a reader of the file."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.get("outputs", []) if not (
                "application/vnd.jupyter.widget-view+json" in output.get("data", {})
                and str(output["data"].get("text/plain", "")).startswith("profiles:"))]


def _render_png(specs: list[dict[str, Any]]) -> list[bytes]:
    """PNGs of plotly figure dicts, rendered in one kaleido batch (one browser start)."""
    import plotly.io as pio

    with tempfile.TemporaryDirectory(prefix="amptools-figures-") as folder:
        files = [Path(folder) / f"figure-{n}.png" for n in range(len(specs))]
        pio.write_images(list(specs), list(files), format="png")
        return [file.read_bytes() for file in files]


def _is_plotly_loader(output: Any) -> bool:
    """The output plotly's ``notebook`` renderer shows once, to load plotly.js for its figures."""
    data = output.get("data", {})
    return (output.get("output_type") == "display_data" and set(data) == {"text/html"}
            and "window.PlotlyConfig" in data["text/html"] and "plotly-graph-div" not in data["text/html"])
