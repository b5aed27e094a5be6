"""The logic behind the profile explorer: plain functions and a controller, no widgets.

:mod:`amptools.widgets` is a thin shell over this module: its callbacks read
widget values, hand them to the functions here and show what comes back. Every
step therefore works (and is tested) without ipywidgets:

- choosing users: :func:`parse_ids` (pasted text), :func:`parse_id_file` (an
  uploaded CSV), :func:`sample_ids` (a pick of the sample org's users),
  :class:`CohortPicker` (the members of an Amplitude cohort);
- choosing what to ask: :func:`build_query` turns plain values into a
  :class:`~amptools.query.ProfileQuery` and :func:`check_query` gives the message to
  show instead of raising;
- fetching: :class:`ExplorerController` runs :func:`amptools.bulk.start_fetch` in a
  background thread with cancel and progress callbacks, notes the recommendation
  exposure once, and afterwards builds tables (:mod:`amptools.tables`), figures
  (:mod:`amptools.plots`, through the :data:`CHARTS` registry) and exports
  (:mod:`amptools.export`);
- offering a file: :func:`download_link` makes the HTML link the widget shows;
- over time: :class:`OverTime` opens a snapshot store, compares two snapshots and
  builds the "Over time" tab's figures and the ``amptools drift`` report.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from . import tables as _tables
from .errors import AmptoolsError, InvalidQueryError
from .ids import SEPARATORS, ParsedIds, parse_id_file, parse_ids, sample_ids
from .query import ID_TYPES, ProfileQuery

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from .bulk import BulkFetch, ProfileSet
    from .client import ProfileClient
    from .cohorts import CohortClient

__all__ = [
    "CHARTS",
    "COMPUTATION_MODES",
    "DEFAULT_EXPORT_FOLDER",
    "MARKETING_EXPORTS",
    "OVER_TIME_CHARTS",
    "SEPARATORS",
    "TABLE_NAMES",
    "ChartOption",
    "ChartSpec",
    "CohortPicker",
    "ExplorerController",
    "OverTime",
    "ParsedIds",
    "build_query",
    "check_query",
    "download_link",
    "parse_id_file",
    "parse_ids",
    "sample_ids",
    "table_html",
]

#: Computations: none, every one enabled for the user, or the chosen ids.
COMPUTATION_MODES = ("none", "all", "chosen")
#: The tables the explorer builds, in the order of its tabs.
TABLE_NAMES = (
    "summary",
    "recommendations",
    "properties",
    "cohorts",
    "cohort_matrix",
    "computations",
    "propensities",
    "failures",
)
DEFAULT_EXPORT_FOLDER = "exports"
#: The marketing table's exports: name -> (label, file suffix). An Excel-safe CSV for
#: people; for Braze, its CSV user import or /users/track bodies (which keep the lists).
MARKETING_EXPORTS = {
    "marketing": ("marketing table (Excel CSV)", ".csv"),
    "braze_csv": ("marketing table for Braze (CSV import)", ".csv"),
    "braze_json": ("marketing table for Braze (/users/track JSON)", ".jsonl"),
}
#: Files up to this size are offered as a ``data:`` URI (works in JupyterLab 4 with
#: no server round trip); larger ones are only named (open them from the file browser).
MAX_INLINE_BYTES = 5_000_000

class CohortPicker:
    """The "From a cohort" chooser, without widgets: list, search, fetch members, cap.

    Parameters
    ----------
    client : CohortClient
        Who lists cohorts and downloads members (``srv.cohort_client()`` on the sample org).
    max_wait : float
        Seconds to wait for Amplitude's download job.

    Attributes
    ----------
    cohorts : DataFrame
        The cohort list (``CohortClient.list_cohorts()``) once :meth:`load` ran.
    members : DataFrame or None
        The members of the last cohort fetched.
    message : str
        One line on what happened last (shown under the chooser).
    error : BaseException or None
        What stopped the last fetch of members.
    """

    def __init__(self, client: CohortClient, *, max_wait: float = 600.0) -> None:
        self.client = client
        self.max_wait = max_wait
        self.cohorts = pd.DataFrame()
        self.members: pd.DataFrame | None = None
        self.cohort_id: str | None = None
        self.message = ""
        self.error: BaseException | None = None
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._done.set()

    def load(self) -> pd.DataFrame:
        """Ask for the cohort list (archived cohorts left out); returns it."""
        self.cohorts = self.client.list_cohorts()
        return self.cohorts

    def names(self) -> dict[str, str]:
        """``{cohort_id: name}`` of the loaded list (for tables and figures)."""
        return _tables.cohort_names(self.cohorts) if not self.cohorts.empty else {}

    def choices(self, search: str = "") -> list[tuple[str, str]]:
        """``(label, cohort_id)`` of the cohorts whose name or id contains ``search`` (any case).

        Labels read ``Power users — 352 users — computed 2024-06-10 22:00``.
        """
        frame = self.cohorts
        if frame.empty:
            return []
        text = search.strip().lower()
        if text:
            frame = frame[frame["name"].str.lower().str.contains(text, regex=False)
                          | frame["cohort_id"].str.lower().str.contains(text, regex=False)]
        labels = []
        for row in frame.itertuples(index=False):
            size = "size unknown" if pd.isna(row.size) else f"{int(row.size):,} users"
            computed = "" if pd.isna(row.last_computed) else f" — computed {row.last_computed:%Y-%m-%d %H:%M}"
            labels.append((f"{row.name or row.cohort_id} — {size}{computed}", str(row.cohort_id)))
        return labels

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def start(self, cohort_id: str, *, on_progress: Callable[[str, str], Any] | None = None,
              on_done: Callable[[CohortPicker], Any] | None = None) -> None:
        """Fetch a cohort's members in a background thread (progress as ``(stage, message)``)."""
        if self.running:
            raise RuntimeError("members are already being fetched; cancel or wait first.")
        self._cancel = threading.Event()
        self._done.clear()
        self.error = None
        self.members = None
        self.cohort_id = cohort_id

        def say(stage: str, message: str) -> None:
            self.message = message
            if on_progress is not None:
                on_progress(stage, message)

        def run() -> None:
            try:
                self.members = self.client.members(cohort_id, max_wait=self.max_wait,
                                                   cancel=self._cancel, on_progress=say)
                info = self.members.attrs.get("cohort", {})
                self.message = (f"{info.get('name') or cohort_id}: {len(self.members):,} members "
                                f"({'reused the download of its last computation' if info.get('from_cache') else 'downloaded'}; "
                                f"{info.get('downloads_spent', 0)} of the org's 500 monthly downloads spent by this session).")
            except BaseException as error:  # shown to the analyst, not lost in a thread
                self.error = error
                self.message = f"Could not fetch the members: {error}"
            finally:
                # Running until on_done returned, as ExplorerController: whoever waits
                # sees the chooser already updated.
                try:
                    if on_done is not None:
                        on_done(self)
                finally:
                    self._done.set()

        threading.Thread(target=run, name="amptools-cohort-members", daemon=True).start()

    def cancel(self) -> None:
        """Stop waiting for the members (nothing is lost: call start again to resume)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def ids(self, *, cap: int | None = None, sample: bool = False, seed: int = 0) -> list[str]:
        """The members' user ids to fetch: all, the first ``cap``, or a seeded sample of ``cap``.

        Members without a ``user_id`` are left out (the Profile API needs one).
        """
        if self.members is None:
            return []
        ids: list[str] = self.members["user_id"].dropna().drop_duplicates().tolist()
        if cap is None or cap >= len(ids):
            return ids
        return sample_ids(ids, cap, seed=seed, include=()) if sample else ids[:cap]


# ---------------------------------------------------------------------------- choosing what to ask
def build_query(
    *,
    recs: Sequence[str] = (),
    rec_type: str | None = None,
    amp_props: bool = False,
    cohort_ids: bool = False,
    computations: str | bool | Sequence[str] = "none",
    computation_ids: Sequence[str] = (),
    predictions: Sequence[str] = (),
    propensity_type: str = "score",
) -> ProfileQuery:
    """A :class:`ProfileQuery` from the plain values a form holds.

    Parameters
    ----------
    recs : sequence of str
        Recommendation ids (tags); blank tags are ignored.
    rec_type : str or None
        ``"model"``, ``"random"``, or None / ``""`` for the experiment's own setting.
    amp_props, cohort_ids : bool
        Ask for user properties / cohort ids.
    computations : {"none", "all", "chosen"} or bool or sequence of str
        ``"chosen"`` asks for ``computation_ids``; a bool or a sequence is passed on
        to ``ProfileQuery`` as is.
    computation_ids : sequence of str
        The computation ids for ``"chosen"``.
    predictions : sequence of str
        Prediction ids whose propensity to ask for.
    propensity_type : {"score", "pct"}

    Returns
    -------
    ProfileQuery

    Raises
    ------
    InvalidQueryError
        With a message saying what to fix (the query's own, or about ``computations``).
    """
    if isinstance(computations, str):
        if computations not in COMPUTATION_MODES:
            raise InvalidQueryError(
                f"computations must be one of {', '.join(COMPUTATION_MODES)}, got {computations!r}."
            )
        if computations == "chosen":
            chosen = tuple(c for c in computation_ids if str(c).strip())
            if not chosen:
                raise InvalidQueryError(
                    "computations is set to 'chosen' but no computation id is given: "
                    "add computation ids, or choose 'all' or 'none'."
                )
            comp_value: bool | tuple[str, ...] = chosen
        else:
            comp_value = computations == "all"
    elif isinstance(computations, bool):
        comp_value = computations
    else:
        comp_value = tuple(computations)
    return ProfileQuery(
        recs=tuple(r for r in recs if str(r).strip()),
        rec_type=rec_type or None,
        amp_props=amp_props,
        cohort_ids=cohort_ids,
        computations=comp_value,
        predictions=tuple(p for p in predictions if str(p).strip()),
        propensity_type=propensity_type,
    )


def check_query(**values: Any) -> tuple[ProfileQuery | None, str | None]:
    """:func:`build_query` that returns ``(query, None)`` or ``(None, message)``."""
    try:
        query = build_query(**values)
    except InvalidQueryError as error:
        return None, str(error)
    if not query.to_params():
        return None, "Nothing is asked for: choose recommendations, properties, cohorts, computations or propensities."
    return query, None


# ---------------------------------------------------------------------------- showing tables and files
def table_html(frame: pd.DataFrame, *, max_rows: int = 200) -> str:
    """An HTML table of the first ``max_rows`` rows (escaped), with a line saying how many."""
    if frame.empty:
        return "<p><i>Nothing to show.</i></p>"
    shown = frame.head(max_rows)
    note = f"{len(frame):,} rows × {frame.shape[1]} columns"
    if len(frame) > max_rows:
        note += f" (first {max_rows:,} shown; export the table for all of it)"
    body = shown.to_html(index=False, escape=True, na_rep="", border=0,
                         classes="amptools-table", max_cols=60)
    style = ("<style>.amptools-table td,.amptools-table th{white-space:nowrap;padding:2px 8px;"
             "text-align:left}</style>")
    return (f"{style}<div style='overflow:auto;max-height:420px'>{body}</div>"
            f"<p><small>{html.escape(note)}</small></p>")


def download_link(path: str | Path, *, label: str | None = None, max_inline_bytes: int = MAX_INLINE_BYTES) -> str:
    """An HTML link that downloads ``path`` from the notebook.

    Parameters
    ----------
    path : str or Path
        The written file.
    label : str, optional
        The link text; the file name by default.
    max_inline_bytes : int
        Files up to this size become a ``<a download>`` with a base64 ``data:`` URI,
        which JupyterLab 4 shows in widgets and the browser saves with the file's
        name. Larger files are only named, with where they were written.

    Returns
    -------
    str
        HTML.
    """
    path = Path(path)
    name = path.name
    size = path.stat().st_size
    shown = html.escape(label or name)
    where = html.escape(str(path))
    if size > max_inline_bytes:
        return (f"<span>Written to <code>{where}</code> ({size:,} bytes, too large for a "
                "download link: open it from JupyterLab's file browser).</span>")
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<a download="{html.escape(name)}" href="data:{mime};base64,{data}" '
            f'target="_blank">⬇ {shown}</a> <small>(written to <code>{where}</code>, {size:,} bytes)</small>')


# ---------------------------------------------------------------------------- charts
@dataclass(frozen=True)
class ChartOption:
    """One option of a chart: a choice among values, or a whole number.

    Attributes
    ----------
    name : str
        The keyword of the figure function (or of the spec's builder).
    label : str
        What the form shows.
    choices : tuple
        ``(label, value)`` pairs for a choice; empty for a number.
    default : Any
        The initial value.
    minimum, maximum : int
        Bounds of a number.
    """

    name: str
    label: str
    choices: tuple[tuple[str, Any], ...] = ()
    default: Any = None
    minimum: int = 1
    maximum: int = 100

    @property
    def is_number(self) -> bool:
        return not self.choices


Tables = Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class ChartSpec:
    """A figure the explorer offers: the table it needs, its options, how to build it.

    Attributes
    ----------
    name : str
        Registry key.
    label : str
        What the picker shows.
    table : str
        The table (of :data:`TABLE_NAMES`) that must be non-empty for this chart.
    options : callable
        ``options(tables) -> list[ChartOption]``, choices taken from the data.
    build : callable
        ``build(tables, **options) -> go.Figure``, calling :mod:`amptools.plots`.
    """

    name: str
    label: str
    table: str
    options: Callable[[Tables], list[ChartOption]]
    build: Callable[..., go.Figure]


def _plots() -> Any:
    from . import plots

    return plots


def _choices(values: Iterable[Any], limit: int = 500) -> tuple[tuple[str, Any], ...]:
    out: list[tuple[str, Any]] = []
    for value in pd.unique(pd.Series(list(values), dtype="object").dropna()):
        out.append((str(value), value))
        if len(out) >= limit:
            break
    return tuple(out)


_KIND = ChartOption("kind", "Kind", (("histogram", "histogram"), ("box", "box"), ("violin", "violin")), "histogram")
_SPLIT = ChartOption("split", "Split by", (("cohort", "cohort"), ("control / treatment", "control"),
                                          ("nothing", "none")), "cohort")


def _groups(tables: Tables, split: str) -> pd.DataFrame | None:
    if split == "cohort" and not tables["cohorts"].empty:
        return tables["cohorts"]
    if split == "control" and not tables["recommendations"].empty:
        return tables["recommendations"]
    return None


def _computation_options(tables: Tables) -> list[ChartOption]:
    names = _choices(tables["computations"]["computation"])
    return [ChartOption("computation", "Computed property", names, names[0][1] if names else None),
            _SPLIT, _KIND]


def _scatter_options(tables: Tables) -> list[ChartOption]:
    names = _choices(tables["computations"]["computation"])
    second = names[1][1] if len(names) > 1 else (names[0][1] if names else None)
    return [ChartOption("x", "x", names, names[0][1] if names else None),
            ChartOption("y", "y", names, second), _SPLIT]


def _user_options(tables: Tables) -> list[ChartOption]:
    users = _choices(tables["recommendations"]["user_id"])
    return [ChartOption("user_id", "User", users, users[0][1] if users else None)]


def _propensity_options(tables: Tables) -> list[ChartOption]:
    ids = _choices(tables["propensities"]["prediction_id"])
    return [ChartOption("prediction_id", "Prediction", (("all", None), *ids), None), _SPLIT, _KIND]


_REC_COLOR = ChartOption("color", "Colour by", (("rec set", "rec_id"), ("model", "recommendation_source"),
                                                 ("nothing", None)), "rec_id")
_TOP_N = ChartOption("top_n", "Top", default=10, minimum=1, maximum=100)


def _no_options(tables: Tables) -> list[ChartOption]:
    return []


CHARTS: dict[str, ChartSpec] = {spec.name: spec for spec in (
    ChartSpec("item_frequency", "Most recommended items", "recommendations",
              lambda t: [_REC_COLOR, _TOP_N],
              lambda t, **o: _plots().item_frequency(t["recommendations"], **o)),
    ChartSpec("rec_overlap_heatmap", "Overlap between recommendation sets", "recommendations",
              lambda t: [ChartOption("by", "Compare", (("rec sets", "rec_id"), ("models", "recommendation_source")),
                                     "rec_id"),
                         ChartOption("metric", "Metric", (("Jaccard", "jaccard"), ("overlap", "overlap"),
                                                          ("rank-biased overlap", "rbo")), "jaccard")],
              lambda t, **o: _plots().rec_overlap_heatmap(t["recommendations"], **o)),
    ChartSpec("control_vs_treatment", "Control vs treatment", "recommendations",
              lambda t: [_TOP_N],
              lambda t, **o: _plots().control_vs_treatment(t["recommendations"], **o)),
    ChartSpec("long_tail", "Long tail of items", "recommendations",
              lambda t: [ChartOption("color", "Colour by", (("model", "recommendation_source"),
                                                            ("rec set", "rec_id"), ("nothing", None)),
                                     "recommendation_source")],
              lambda t, **o: _plots().long_tail(t["recommendations"], **o)),
    ChartSpec("user_lists", "One user's lists", "recommendations", _user_options,
              lambda t, **o: _plots().user_lists(t["recommendations"], **o)),
    ChartSpec("cohort_sizes", "Cohort sizes", "cohorts", _no_options,
              lambda t, **o: _plots().cohort_sizes(t["cohorts"], **o)),
    ChartSpec("cohort_overlap", "Cohort overlap", "cohorts", _no_options,
              lambda t, **o: _plots().cohort_overlap(t["cohorts"], **o)),
    ChartSpec("cohort_upset", "Cohort intersections", "cohorts", _no_options,
              lambda t, **o: _plots().cohort_upset(t["cohorts"], **o)),
    ChartSpec("computation_distribution", "Computed property distribution", "computations",
              _computation_options,
              lambda t, split="cohort", **o: _plots().computation_distribution(
                  t["computations"], groups=_groups(t, split), **o)),
    ChartSpec("computation_scatter", "Two computed properties", "computations", _scatter_options,
              lambda t, split="cohort", **o: _plots().computation_scatter(
                  t["computations"], groups=_groups(t, split), **o)),
    ChartSpec("propensity_distribution", "Propensity distribution", "propensities", _propensity_options,
              lambda t, split="cohort", **o: _plots().propensity_distribution(
                  t["propensities"], groups=_groups(t, split), **o)),
)}


# ---------------------------------------------------------------------------- the controller
ProgressCallback = Callable[[int, int, Mapping[str, int]], None]
DoneCallback = Callable[["ExplorerController"], None]


class ExplorerController:
    """The explorer's state and actions, with no widget in sight.

    Parameters
    ----------
    client : ProfileClient
        Who fetches.
    workers : int
        Threads of a fetch (they share the client's rate limiter).
    cache : str or path, optional
        Passed on to the bulk fetch: answers kept there are not asked again.
    export_folder : str or path
        Where :meth:`export` writes (created when needed).
    cohort_names : cohort list, mapping or CohortClient, optional
        Shows cohorts by name in the tables and charts (see
        :func:`amptools.tables.cohort_names`); ids when the names cannot be had.

    Examples
    --------
    >>> ctl = ExplorerController(client)                      # doctest: +SKIP
    >>> ctl.start(["testUser"], build_query(recs=["testRecId"]))
    >>> ctl.wait(30)
    True
    >>> ctl.table("recommendations")
    """

    def __init__(
        self,
        client: ProfileClient,
        *,
        workers: int = 4,
        cache: str | Path | None = None,
        export_folder: str | Path = DEFAULT_EXPORT_FOLDER,
        cohort_names: Any = None,
    ) -> None:
        self.client = client
        self.cohort_names = cohort_names
        self.workers = workers
        # Without a cache of the analyst's, one for this session: fetching the same
        # users again must not log their recommendation exposures again.
        self.cache = cache if cache is not None else (
            Path(tempfile.mkdtemp(prefix="amptools-explorer-")) / "profiles.sqlite")
        self.export_folder = Path(export_folder)
        self.result: ProfileSet | None = None
        self.error: BaseException | None = None
        self.notes: list[str] = []
        self.export_warnings: list[str] = []
        self.exported: list[Path] = []
        self._exposure_noted = False
        self._job: BulkFetch | None = None
        self._finished = threading.Event()
        self._finished.set()
        self._tables: dict[str, pd.DataFrame] = {}
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()

    # -- fetching --------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """True while a fetch (or the work after it) is going on."""
        return not self._finished.is_set()

    @property
    def progress(self) -> tuple[int, int, dict[str, int]]:
        """``(done, total, counts)`` of the current or last fetch."""
        if self._job is None:
            return 0, 0, {}
        return self._job.progress

    def quota_text(self) -> str:
        """One line on the org's quota: requests in the last minute, the pace, throttles."""
        quota = getattr(self.client, "quota", None)
        return str(quota()) if callable(quota) else ""

    def exposure_note(self, query: ProfileQuery) -> str | None:
        """The recommendation-exposure message the first time ``query`` asks for recommendations; else None."""
        if not query.asks_recommendations or self._exposure_noted:
            return None
        self._exposure_noted = True
        from .client import exposure_message

        return exposure_message(cache=True)  # the controller always fetches through one

    def start(
        self,
        ids: Sequence[str],
        query: ProfileQuery,
        *,
        id_type: str = "user_id",
        on_progress: ProgressCallback | None = None,
        on_done: DoneCallback | None = None,
    ) -> str | None:
        """Start fetching ``ids`` in the background and return at once.

        Parameters
        ----------
        ids : sequence of str
            Who to fetch.
        query : ProfileQuery
            What to ask.
        id_type : {"user_id", "device_id"}
        on_progress : callable, optional
            ``on_progress(done, total, counts)``, called in the fetch's thread.
        on_done : callable, optional
            ``on_done(controller)`` once the fetch ended and the tables are built
            (or :attr:`error` is set); called in a background thread.

        Returns
        -------
        str or None
            The exposure note when this is the first fetch asking for recommendations.

        Raises
        ------
        InvalidQueryError
            Before any request: no ids, bad ids, bad options.
        RuntimeError
            When a fetch is already running.
        """
        with self._start_lock:  # two quick clicks must not start two fetches
            return self._start(ids, query, id_type, on_progress, on_done)

    def _start(self, ids: Sequence[str], query: ProfileQuery, id_type: str,
               on_progress: ProgressCallback | None, on_done: DoneCallback | None) -> str | None:
        from .bulk import start_fetch, unique_ids

        if self.running:
            raise RuntimeError("a fetch is already running; cancel it or wait for it first.")
        if not ids:
            raise InvalidQueryError("no users chosen: give at least one id.")
        if id_type not in ID_TYPES:
            raise InvalidQueryError(f"id_type must be one of {', '.join(ID_TYPES)}, got {id_type!r}.")
        ids = unique_ids(ids, id_type)  # bad ids are refused before the exposure is noted
        if query.asks_recommendations:
            # The explorer says it in its own note (below), so the client need not warn.
            self.client.acknowledge_exposure()
        job = start_fetch(self.client, list(ids), query, id_type=id_type, workers=self.workers,
                          cache=self.cache, on_progress=on_progress)
        note = self.exposure_note(query)
        if note:
            self.notes.append(note)
        self._job = job
        self.error = None
        self._finished.clear()
        job.add_done_callback(lambda ended: self._ended(ended, on_done))
        return note

    def _ended(self, job: BulkFetch, on_done: DoneCallback | None) -> None:
        """In the fetch's thread once it ended: the tables, then ``on_done``."""
        try:
            result: ProfileSet | None
            try:
                result = job.result()
            except AmptoolsError as error:
                result = getattr(error, "partial", None)
                self.error = error
            except BaseException as error:  # shown to the analyst, not lost in a thread
                result = None
                self.error = error
            if result is not None:
                self.set_result(result)
            if on_done is not None:
                on_done(self)
        finally:
            self._finished.set()

    def cancel(self) -> None:
        """Stop the running fetch: no new request; the answers so far are kept."""
        if self._job is not None:
            self._job.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the fetch ended and ``on_done`` ran; False when ``timeout`` ran out first."""
        return self._finished.wait(timeout)

    # -- results -----------------------------------------------------------------------
    def set_result(self, result: ProfileSet) -> None:
        """Take a :class:`ProfileSet` (from a fetch, or made elsewhere) and build its tables."""
        names = self._cohort_names()
        built = {
            "summary": _tables.summary(result),
            "recommendations": _tables.recommendations(result),
            "properties": _tables.properties(result),
            "cohorts": _tables.cohorts(result, names=names),
            "cohort_matrix": _tables.cohort_matrix(result, names=names),
            "computations": _tables.computations(result),
            "propensities": _tables.propensities(result),
            "failures": result.failures,
        }
        with self._lock:
            self.result = result
            self._tables = built

    def _cohort_names(self) -> dict[str, str] | None:
        if self.cohort_names is None:
            return None
        try:
            return _tables.cohort_names(self.cohort_names)
        except AmptoolsError as error:  # the names are a nicety: the ids still work
            self.notes.append(f"Cohorts are shown by id: their names could not be had ({error}).")
            return None

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table of the last result by name (:data:`TABLE_NAMES`); empty before one."""
        with self._lock:
            return dict(self._tables)

    def table(self, name: str) -> pd.DataFrame:
        """One table of the last result.

        Raises
        ------
        KeyError
            For an unknown name (the message lists the names).
        LookupError
            Before any result.
        """
        if name not in TABLE_NAMES:
            raise KeyError(f"unknown table {name!r}; tables are {', '.join(TABLE_NAMES)}.")
        tables = self.tables
        if not tables:
            raise LookupError("no results yet: fetch first.")
        return tables[name]

    def status_text(self) -> str:
        """One line on the last fetch: counts, whether it was cancelled, the error."""
        if self.error is not None and self.result is None:
            return f"The fetch failed: {self.error}"
        if self.result is None:
            return ""
        counts = self.result.counts
        text = (f"{counts['ok']:,} fetched, {counts['not_found']:,} not found, "
                f"{counts['failed']:,} failed in {self.result.elapsed:.1f}s")
        if self.result.cancelled:
            text += " — cancelled: the results so far are kept (ids never fetched are listed as failed)"
        if self.error is not None:
            text += f" — stopped: {self.error}"
        return text + "."

    def save_snapshot(self, store: str | Path, *, label: str | None = None) -> str:
        """Keep the last result in a snapshot store (:func:`amptools.snapshots.save`); return its id."""
        from . import snapshots

        if self.result is None:
            raise LookupError("no results yet: fetch first.")
        return snapshots.save(self.result, store, label=label or None)

    # -- charts ------------------------------------------------------------------------
    def available_charts(self) -> list[str]:
        """Names of the :data:`CHARTS` whose table has rows in the last result."""
        tables = self.tables
        return [name for name, spec in CHARTS.items() if not tables.get(spec.table, pd.DataFrame()).empty]

    def chart_options(self, name: str) -> list[ChartOption]:
        """The options of chart ``name``, their choices taken from the last result."""
        return CHARTS[name].options(self.tables)

    def figure(self, name: str, **options: Any) -> go.Figure:
        """Build chart ``name`` from the last result; unset options take their defaults.

        Raises
        ------
        KeyError
            Unknown chart (the message lists the charts).
        LookupError
            When there is no result or the chart's table is empty.
        """
        if name not in CHARTS:
            raise KeyError(f"unknown chart {name!r}; charts are {', '.join(CHARTS)}.")
        spec = CHARTS[name]
        tables = self.tables
        if not tables or tables[spec.table].empty:
            raise LookupError(f"{spec.label} needs the {spec.table} table, which is empty: "
                              f"ask for {spec.table} and fetch.")
        values = {option.name: option.default for option in spec.options(tables)}
        values.update(options)
        return spec.build(tables, **values)

    # -- export ------------------------------------------------------------------------
    def marketing_table(self, **options: Any) -> pd.DataFrame:
        """:func:`amptools.export.marketing_table` of the last result."""
        from . import export

        if self.result is None:
            raise LookupError("no results yet: fetch first.")
        return export.marketing_table(self.result, **options)

    def export(
        self,
        name: str,
        *,
        folder: str | Path | None = None,
        filename: str | None = None,
        **options: Any,
    ) -> Path:
        """Write a table as an Excel-safe CSV, or the marketing table for Braze; return the path.

        Parameters
        ----------
        name : str
            One of :data:`MARKETING_EXPORTS` (``"marketing"``: Excel-safe CSV;
            ``"braze_csv"``: :func:`amptools.export.to_braze_csv`;
            ``"braze_json"``: :func:`amptools.export.to_braze_json`) or of
            :data:`TABLE_NAMES`.
        folder : str or Path, optional
            Where to write; :attr:`export_folder` by default. Created when needed.
        filename : str, optional
            ``<name>-<YYYYmmdd-HHMMSS>.csv`` (``.jsonl`` for ``"braze_json"``) by default.
        **options
            For the marketing exports: passed to :func:`amptools.export.marketing_table`
            (``rec_id``, ``top_n``, ``cohorts``, ``props``, ``include_pii``).

        Returns
        -------
        Path
            The file written; a Braze CSV over 500 MB is split, and
            :attr:`exported` lists every part.
        """
        from . import export

        if name in MARKETING_EXPORTS:
            suffix = MARKETING_EXPORTS[name][1]
            frame = self.marketing_table(**options, **({"items_as": "list"} if name == "braze_json" else {}))
        else:
            suffix = ".csv"
            frame = self.table(name)
        target_folder = Path(folder) if folder is not None else self.export_folder
        target_folder.mkdir(parents=True, exist_ok=True)
        if filename is None:
            filename = f"{name}-{datetime.now():%Y%m%d-%H%M%S}{suffix}"
        elif not filename.lower().endswith(suffix):
            filename += suffix
        if Path(filename).name != filename:
            raise InvalidQueryError(f"file name {filename!r} must not contain a folder; set the folder instead.")
        path = target_folder / filename
        # Warnings (e.g. cells Excel would reformat) are kept to be shown, not printed
        # from a button callback where nobody sees them.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if name == "braze_csv":
                self.exported = export.to_braze_csv(frame, path)
            elif name == "braze_json":
                self.exported = [export.to_braze_json(frame, path)]
            else:
                export.to_csv(frame, path)
                self.exported = [path]
        self.export_warnings = [str(w.message) for w in caught]
        return self.exported[0]

    # -- message preview (Braze Connected Content) ----------------------------------------
    def message_template(self, query: ProfileQuery | None = None) -> str:
        """A Braze message to start from for ``query`` (the last result's by default).

        :func:`amptools.braze.starter_template`: the ``connected_content`` tag for the
        query, the guard, a greeting and the top picks.

        Raises
        ------
        LookupError
            With no query and no result yet.
        """
        from . import braze

        if query is None:
            if self.result is None:
                raise LookupError("no results yet: fetch first, or pass the query.")
            query = self.result.query
        return braze.starter_template(query)

    def preview_messages(self, template: str) -> pd.DataFrame:
        """Every fetched user's message, what needs a look first.

        :func:`amptools.braze.preview` of ``template`` over the last result (its
        ``not_found`` and ``failed`` users included), with the properties table as
        the Braze attributes (so ``${country}`` reads the user's ``country``), then
        :func:`amptools.braze.sort_for_review`: errors, aborted messages and messages
        with unresolved variables first.

        Returns
        -------
        pandas.DataFrame
            :data:`amptools.braze.PREVIEW_COLUMNS`.

        Raises
        ------
        LookupError
            Before any result.
        """
        from . import braze

        if self.result is None:
            raise LookupError("no results yet: fetch first.")
        previews = braze.preview(template, self.result, attributes=self.tables.get("properties"))
        return braze.sort_for_review(previews)

    @staticmethod
    def preview_summary(previews: pd.DataFrame) -> str:
        """One line on a preview: how many rendered, aborted (and why), failed, had empty variables."""
        counts = previews["status"].value_counts()
        unresolved = int((previews["unresolved"].fillna("") != "").sum())
        text = (f"{int(counts.get('rendered', 0)):,} rendered ({unresolved:,} with empty variables), "
                f"{int(counts.get('aborted', 0)):,} aborted, {int(counts.get('error', 0)):,} errors")
        reasons = previews["abort_reason"].dropna().value_counts()
        if len(reasons):
            text += " — aborted: " + ", ".join(f"{reason or '(no reason)'} ×{n:,}" for reason, n in reasons.items())
        return text + "."


# ---------------------------------------------------------------------------- over time (snapshots)
#: The figures of the "Over time" tab and of ``amptools drift``, in order: name -> label.
OVER_TIME_CHARTS = {
    "drift_over_time": "Drift over time (every snapshot of the series)",
    "item_churn": "Items that entered and left",
    "rank_shift": "How far items moved",
    "cohort_flow": "Cohort membership (joined, left, stayed)",
}


class OverTime:
    """The "Over time" tab without widgets: a snapshot store, two snapshots, their figures.

    Parameters
    ----------
    store : str or path
        A store written by :func:`amptools.snapshots.save` (``amptools fetch --snapshot``).
    by : str
        The column naming a user's lists (``rec_id``).
    k : int, optional
        Compare only the top ``k`` items of each list.

    Attributes
    ----------
    listing : DataFrame
        :func:`amptools.snapshots.list` of the store.
    before, after : Snapshot or None
        The two snapshots compared (:meth:`compare`).
    """

    def __init__(self, store: str | Path, *, by: str = "rec_id", k: int | None = None) -> None:
        self.store = Path(store)
        self.by = by
        self.k = k
        self.listing = pd.DataFrame()
        self.before: Any = None
        self.after: Any = None
        self._cache: dict[str, Any] = {}
        self.refresh()

    def refresh(self) -> pd.DataFrame:
        """Read the store's list of snapshots again (a nightly job may have added one)."""
        from . import snapshots

        self.listing = snapshots.list(self.store)
        return self.listing

    def choices(self) -> list[tuple[str, str]]:
        """``(label, snapshot id)`` of every snapshot, oldest first, as a picker shows them."""
        out = []
        for row in self.listing.itertuples(index=False):
            name = f" — {row.label}" if isinstance(row.label, str) and row.label else ""
            out.append((f"{row.taken_at:%Y-%m-%d %H:%M} UTC{name} — {row.n_ok:,} users ({row.snapshot})",
                        str(row.snapshot)))
        return out

    def compare(self, before: str | int | None = None, after: str | int | None = None) -> None:
        """Choose the two snapshots (ids, labels or positions); by default the newest and the one before.

        Raises
        ------
        SnapshotError
            When they are of different orgs or queries, or the store has too few.
        """
        from . import snapshots

        self.before, self.after = snapshots.pair(self.store, before, after)
        self._cache = {}

    def _need_pair(self) -> tuple[Any, Any]:
        if self.before is None or self.after is None:
            self.compare()
        return self.before, self.after

    def _cached(self, name: str, build: Callable[[], Any]) -> Any:
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    def summary(self) -> pd.DataFrame:
        """:func:`amptools.metrics.drift_summary` of the two snapshots."""
        from . import metrics

        before, after = self._need_pair()
        return self._cached("summary", lambda: metrics.drift_summary(
            before.recommendations, after.recommendations, by=self.by, k=self.k))

    def churn(self) -> pd.DataFrame:
        """:func:`amptools.metrics.item_churn` of the two snapshots."""
        from . import metrics

        before, after = self._need_pair()
        return self._cached("churn", lambda: metrics.item_churn(
            before.recommendations, after.recommendations, by=self.by, k=self.k))

    def cohort_changes(self) -> pd.DataFrame:
        """:func:`amptools.tables.cohort_changes` of the two snapshots."""
        before, after = self._need_pair()
        return self._cached("cohort_changes", lambda: _tables.cohort_changes(before, after))

    def computation_changes(self) -> pd.DataFrame:
        """:func:`amptools.tables.computation_changes` of the two snapshots."""
        before, after = self._need_pair()
        return self._cached("computation_changes", lambda: _tables.computation_changes(before, after))

    def history(self) -> pd.DataFrame:
        """:func:`amptools.snapshots.drift_history` of the series of the snapshots compared."""
        from . import snapshots

        _, after = self._need_pair()
        return self._cached("history", lambda: snapshots.drift_history(
            self.store, series=after.series, by=self.by, k=self.k))

    def groups(self) -> list[str]:
        """The sets (values of ``by``) in either snapshot, sorted."""
        return [str(value) for value in self.summary()[self.by].dropna()]

    def available_charts(self) -> list[str]:
        """The :data:`OVER_TIME_CHARTS` the two snapshots have data for."""
        names = ["drift_over_time", "item_churn", "rank_shift"] if not self.summary().empty else []
        before, after = self._need_pair()
        if not (before.cohorts.empty and after.cohorts.empty):
            names.append("cohort_flow")
        return names

    def figure(self, name: str, *, group: str | None = None, **options: Any) -> go.Figure:
        """One of :data:`OVER_TIME_CHARTS` for the two snapshots (``group``: the set shown)."""
        plots = _plots()
        if name == "drift_over_time":
            return plots.drift_over_time(self.history(), color=self.by, **options)
        if name in ("item_churn", "rank_shift"):
            function = plots.item_churn if name == "item_churn" else plots.rank_shift
            return function(self.churn(), by=self.by, group=group, **options)
        if name == "cohort_flow":
            return plots.cohort_flow(self.cohort_changes(), **options)
        raise KeyError(f"unknown chart {name!r}; charts are {', '.join(OVER_TIME_CHARTS)}.")

    def describe(self) -> str:
        """One line on the two snapshots compared."""
        before, after = self._need_pair()
        return (f"{before.taken_at:%Y-%m-%d %H:%M} → {after.taken_at:%Y-%m-%d %H:%M} UTC "
                f"({before.id} → {after.id})")

    def report_html(self, *, title: str | None = None) -> str:
        """A self-contained HTML page (plotly.js inlined, works offline): the summary, every figure, the changes."""
        before, after = self._need_pair()
        title = title or "Recommendations over time"
        parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(self.describe())}</p>",
                 "<h2>What changed, per set</h2>", table_html(self.summary())]
        first = True
        for name in self.available_charts():
            groups = self.groups() if name in ("item_churn", "rank_shift") else [None]
            for group in groups:
                figure = self.figure(name, group=group) if group is not None else self.figure(name)
                parts.append(figure.to_html(full_html=False, include_plotlyjs=first))
                first = False
        changes = self.cohort_changes()
        if not changes.empty:
            counts = changes.groupby(["cohort_id", "change"], observed=True).size().unstack(fill_value=0).reset_index()
            parts += ["<h2>Cohorts</h2>", table_html(counts)]
        moved = self.computation_changes()
        if not moved.empty:
            summary = moved.groupby("computation", observed=True).agg(
                users=("changed", "size"), changed=("changed", "sum"), mean_delta=("delta", "mean")).reset_index()
            parts += ["<h2>Computed properties</h2>", table_html(summary)]
        body = "\n".join(parts)
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>body{{font-family:sans-serif;margin:2em}}</style></head><body>{body}</body></html>")

    def write_report(self, path: str | Path, *, title: str | None = None) -> Path:
        """Write :meth:`report_html` to ``path`` (whole or not at all); return the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        partial.write_text(self.report_html(title=title), encoding="utf-8")
        partial.replace(target)
        return target
