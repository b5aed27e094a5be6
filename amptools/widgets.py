"""ipywidgets for JupyterLab: choose users, choose what to ask, fetch, look, export.

This is the only module that imports ipywidgets, and it holds no logic of its own:
every callback reads widget values and calls :mod:`amptools.controller` (which calls
``bulk``, ``tables``, ``plots`` and ``export``), then shows what came back.

>>> import amptools as amp
>>> import amptools.widgets
>>> explorer = amp.widgets.ProfileExplorer(amp.connect())   # doctest: +SKIP
>>> explorer                                                 # displays itself

The parts work on their own and hand back plain values::

    chooser = UserChooser(); chooser        # then chooser.ids, chooser.id_type
    options = QueryOptions(); options       # then options.query -> ProfileQuery
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from . import controller as logic
from .connection import cohort_client_for, sample_server
from .errors import InvalidQueryError
from .controller import ChartOption, CohortPicker, ExplorerController, OverTime, ParsedIds
from .ids import TEST_USER
from .query import ProfileQuery

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from .client import ProfileClient
    from .cohorts import CohortClient

__all__ = ["ProfileExplorer", "QueryOptions", "UserChooser"]

#: The explorer's result tabs, in order: (title, table name or None for a special tab).
RESULT_TABS: tuple[tuple[str, str | None], ...] = (
    ("Summary", "summary"),
    ("Recommendations", "recommendations"),
    ("Properties", "properties"),
    ("Cohorts", "cohort_matrix"),
    ("Computations", "computations"),
    ("Propensities", "propensities"),
    ("Failures", "failures"),
    ("Charts", None),
    ("Export", None),
    ("Message preview", None),
    ("Over time", None),
)
_NOTE_STYLE = ("padding:6px 10px;border-left:4px solid #e0a800;background:#fff8e1;"
               "color:#5c4400;margin:4px 0")
_ERROR_STYLE = "color:#b00020"


def _message(text: str | None, *, error: bool = False) -> str:
    if not text:
        return ""
    style = _ERROR_STYLE if error else "color:#555"
    return f"<span style='{style}'>{html.escape(text)}</span>"


def _default_cohort_client(client: Any) -> CohortClient | None:
    """The sample org's cohort client, or the environment's; None when there is none."""
    from .errors import ConfigurationError

    try:
        return cohort_client_for(client)
    except ConfigurationError:  # no Cohorts API keys: the chooser goes without "From a cohort"
        return None


# ---------------------------------------------------------------------------- users
class UserChooser(widgets.VBox):
    """Choose users: one id, a pasted list, an uploaded CSV, a pick of the sample org, a cohort.

    Parameters
    ----------
    org_ids : sequence of str, optional
        Every user id of the org, when known (the sample org): adds the "Sample"
        method, a reproducible pick of ``sample_size`` users with ``testUser`` first.
    org_device_ids : sequence of str, optional
        The same users' device ids, in the same order (for device-id picks).
    id_type : {"user_id", "device_id"}
        What the ids are.
    sample_size : int
        The initial size of the pick.
    method : {"one", "paste", "upload", "sample", "cohort"}, optional
        The method shown first; ``"sample"`` when ``org_ids`` is given, else ``"paste"``.
    cohorts : CohortPicker, optional
        Adds "From a cohort": the cohorts with name, size and last computed, a search
        box, "Fetch members" with progress, then the members' user ids (at most
        ``cohort_cap``, the first ones or a seeded random sample).
    cohort_cap : int
        The initial cap on the users taken from a cohort.

    Attributes
    ----------
    ids : list of str
        The chosen ids (unique, in order) of the current method.
    id_type : str
        ``"user_id"`` or ``"device_id"``; settable.
    """

    METHODS = ("one", "paste", "upload", "sample", "cohort")

    def __init__(
        self,
        *,
        org_ids: Sequence[str] | None = None,
        org_device_ids: Sequence[str] | None = None,
        id_type: str = "user_id",
        sample_size: int = 10,
        method: str | None = None,
        cohorts: CohortPicker | None = None,
        cohort_cap: int = 1000,
    ) -> None:
        self.org_ids = org_ids
        self.org_device_ids = org_device_ids
        self._callbacks: list[Callable[[UserChooser], None]] = []
        self._file = ParsedIds()
        self._file_error: str | None = None
        self.id_type_buttons = widgets.ToggleButtons(
            options=[("user ids", "user_id"), ("device ids", "device_id")], value=id_type,
            description="Ids are", style={"button_width": "90px", "description_width": "initial"},
        )
        self.single = widgets.Text(placeholder="a user id, e.g. testUser", description="Id",
                                   layout=widgets.Layout(width="420px"))
        self.pasted = widgets.Textarea(
            placeholder="Paste ids: one per line, or separated by commas or spaces",
            layout=widgets.Layout(width="420px", height="110px"),
        )
        self.separator = widgets.Dropdown(
            options=[("auto", "auto"), ("one per line", "lines"), ("commas", "commas"),
                     ("spaces", "whitespace")], value="auto", description="Split on",
            layout=widgets.Layout(width="240px"),
        )
        self.upload = widgets.FileUpload(accept=".csv,.txt,text/csv,text/plain", multiple=False,
                                         description="Upload CSV")
        upload_help = widgets.HTML(
            "<small>A CSV with a <code>user_id</code> or <code>device_id</code> column, "
            "or one id per line.</small>")
        self.sample_size = widgets.BoundedIntText(value=sample_size, min=1, max=10_000, description="Users",
                                                  layout=widgets.Layout(width="180px"))
        self.include_test_user = widgets.Checkbox(value=True, description=f"include {TEST_USER}",
                                                  indent=False)
        self.reshuffle = widgets.Button(description="Another pick", icon="random")
        self.sample_seed = 0
        panels: list[tuple[str, str, widgets.Widget]] = [
            ("one", "One id", self.single),
            ("paste", "Paste a list", widgets.VBox([self.pasted, self.separator])),
            ("upload", "Upload a CSV", widgets.VBox([self.upload, upload_help])),
        ]
        if org_ids is not None:
            panels.append(("sample", "Sample org users", widgets.HBox(
                [self.sample_size, self.include_test_user, self.reshuffle])))
        self.cohorts = cohorts
        self._cohorts_asked = False
        if cohorts is not None:
            panels.append(("cohort", "From a cohort", self._build_cohort_panel(cohort_cap)))
        self._methods = [name for name, _, _ in panels]
        self.tabs = widgets.Tab(children=[panel for _, _, panel in panels],
                                titles=[title for _, title, _ in panels])
        if method is None:
            method = "sample" if org_ids is not None else "paste"
        self.method = method
        self.message = widgets.HTML()

        for widget, name in ((self.single, "value"), (self.pasted, "value"), (self.separator, "value"),
                             (self.sample_size, "value"), (self.include_test_user, "value"),
                             (self.tabs, "selected_index"), (self.id_type_buttons, "value")):
            widget.observe(self._changed, names=name)
        self.upload.observe(self._uploaded, names="value")
        self.reshuffle.on_click(self._another_pick)
        super().__init__([self.id_type_buttons, self.tabs, self.message])
        self._changed()

    # -- plain values --------------------------------------------------------------
    @property
    def method(self) -> str:
        """The current way of choosing: ``one``, ``paste``, ``upload`` or ``sample``."""
        return self._methods[self.tabs.selected_index or 0]

    @method.setter
    def method(self, value: str) -> None:
        if value not in self._methods:
            raise ValueError(f"method must be one of {', '.join(self._methods)}, got {value!r}.")
        self.tabs.selected_index = self._methods.index(value)

    @property
    def id_type(self) -> str:
        return str(self.id_type_buttons.value)

    @id_type.setter
    def id_type(self, value: str) -> None:
        self.id_type_buttons.value = value

    @property
    def parsed(self) -> ParsedIds:
        """The ids of the current method, with duplicates and blanks reported."""
        method = self.method
        if method == "one":
            return logic.parse_ids(self.single.value, separator="lines")
        if method == "paste":
            return logic.parse_ids(self.pasted.value, separator=self.separator.value)
        if method == "upload":
            return self._file
        if method == "cohort":
            return ParsedIds(self._cohort_ids(), [], 0, "user_id")
        return ParsedIds(self._sample(), [], 0, self.id_type)

    @property
    def ids(self) -> list[str]:
        """The chosen ids (unique, in order)."""
        return list(self.parsed.ids)

    def on_change(self, callback: Callable[[UserChooser], None]) -> None:
        """Call ``callback(chooser)`` whenever the chosen ids may have changed."""
        self._callbacks.append(callback)

    # -- callbacks -----------------------------------------------------------------
    def _sample(self) -> list[str]:
        ids = self.org_ids
        include: tuple[str, ...] = (TEST_USER,) if self.include_test_user.value else ()
        if self.id_type == "device_id":
            if self.org_device_ids is None:
                return []
            test_device = (self.org_device_ids[0],) if ids is not None and ids[0] == TEST_USER else ()
            ids, include = self.org_device_ids, (test_device if include else ())
        if ids is None:
            return []
        return logic.sample_ids(ids, int(self.sample_size.value), seed=self.sample_seed, include=include)

    # -- from a cohort (the logic is explorer.CohortPicker) ----------------------------
    _STAGES = {"requested": 1, "waiting": 2, "downloading": 3, "cached": 4, "done": 4}

    def _build_cohort_panel(self, cap: int) -> widgets.Widget:
        self.cohort_search = widgets.Text(placeholder="search by name or id", description="Search",
                                          layout=widgets.Layout(width="320px"))
        self.cohort_list = widgets.Select(options=[], rows=8, layout=widgets.Layout(width="560px"))
        self.cohort_fetch = widgets.Button(description="Fetch members", icon="download", disabled=True)
        self.cohort_cancel = widgets.Button(description="Cancel", icon="stop", disabled=True)
        self.cohort_progress = widgets.IntProgress(value=0, min=0, max=4, layout=widgets.Layout(width="160px"))
        self.cohort_cap = widgets.BoundedIntText(value=cap, min=1, max=2_000_000, description="At most",
                                                 layout=widgets.Layout(width="200px"))
        self.cohort_sample = widgets.Checkbox(value=True, description="a random sample when larger",
                                              indent=False)
        self.cohort_status = widgets.HTML()
        self.cohort_search.observe(lambda _: self._show_cohorts(), names="value")
        self.cohort_list.observe(lambda _: self._cohort_buttons(), names="value")
        for widget in (self.cohort_cap, self.cohort_sample):
            widget.observe(self._changed, names="value")
        self.cohort_fetch.on_click(self._fetch_members)
        self.cohort_cancel.on_click(lambda _: self.cohorts.cancel() if self.cohorts else None)
        return widgets.VBox([
            self.cohort_search, self.cohort_list,
            widgets.HBox([self.cohort_fetch, self.cohort_cancel, self.cohort_progress],
                         layout=widgets.Layout(align_items="center")),
            widgets.HBox([self.cohort_cap, self.cohort_sample]), self.cohort_status,
        ])

    def load_cohorts(self) -> None:
        """Ask for the cohort list (done the first time "From a cohort" is shown)."""
        if self.cohorts is None:
            return
        self._cohorts_asked = True
        try:
            self.cohorts.load()
        except Exception as error:  # shown in the panel; the other methods still work
            self.cohort_status.value = _message(f"Could not list the cohorts: {error}", error=True)
            return
        self._show_cohorts()

    def _show_cohorts(self) -> None:
        assert self.cohorts is not None
        chosen = self.cohort_list.value
        options = self.cohorts.choices(self.cohort_search.value)
        self.cohort_list.options = options
        if chosen in [value for _, value in options]:
            self.cohort_list.value = chosen
        shown = f"{len(options):,} of {len(self.cohorts.cohorts):,} cohorts"
        self.cohort_status.value = _message(self.cohorts.message or shown)
        self._cohort_buttons()

    def _cohort_buttons(self) -> None:
        running = self.cohorts is not None and self.cohorts.running
        self.cohort_fetch.disabled = running or self.cohort_list.value is None
        self.cohort_cancel.disabled = not running

    def _fetch_members(self, _button: Any = None) -> None:
        if self.cohorts is None or self.cohort_list.value is None:
            return
        self.cohort_progress.value, self.cohort_progress.bar_style = 0, ""
        self.cohort_status.value = _message("Asking Amplitude for the members…")
        self.cohorts.start(self.cohort_list.value, on_progress=self._member_progress,
                           on_done=self._members_done)
        self._cohort_buttons()

    def _member_progress(self, stage: str, message: str) -> None:
        self.cohort_progress.value = self._STAGES.get(stage, self.cohort_progress.value)
        self.cohort_status.value = _message(message)

    def _members_done(self, picker: CohortPicker) -> None:
        self.cohort_progress.bar_style = "danger" if picker.error else "success"
        self.cohort_status.value = _message(picker.message, error=picker.error is not None)
        self.cohort_fetch.disabled = self.cohort_list.value is None  # picker.running until this returns
        self.cohort_cancel.disabled = True
        if picker.error is None:
            self.id_type = "user_id"  # a cohort's members come as user ids
        self._changed()

    def _cohort_ids(self) -> list[str]:
        if self.cohorts is None:
            return []
        return self.cohorts.ids(cap=int(self.cohort_cap.value), sample=bool(self.cohort_sample.value))

    def _uploaded(self, change: Mapping[str, Any]) -> None:
        files = change["new"] or ()
        self._file, self._file_error = ParsedIds(), None
        if files:
            upload = files[0]
            try:
                self._file = logic.parse_id_file(upload["content"], id_type=self.id_type)
            except InvalidQueryError as error:
                self._file_error = f"{upload.get('name', 'the file')}: {error}"
            if self._file.id_type is not None and self._file.id_type != self.id_type:
                self.id_type = self._file.id_type  # the header says which ids these are
        self._changed()

    def _another_pick(self, _button: Any = None) -> None:
        self.sample_seed += 1
        self._changed()

    def _changed(self, _change: Any = None) -> None:
        if self.method == "cohort" and not self._cohorts_asked:
            self.load_cohorts()
        self._update_message()
        for callback in self._callbacks:
            callback(self)

    def _update_message(self) -> None:
        if self.method == "upload" and self._file_error:
            self.message.value = _message(self._file_error, error=True)
            return
        parsed = self.parsed
        text = ParsedIds(parsed.ids, parsed.duplicates, parsed.blanks, self.id_type).message
        if parsed.ids and self.method in ("sample", "upload", "cohort"):
            preview = ", ".join(parsed.ids[:5]) + (", …" if len(parsed.ids) > 5 else "")
            text = f"{text[:-1]}: {preview}"
        if self.method == "upload" and self.upload.value:
            text = f"{self.upload.value[0].get('name', 'file')}: {text}"
        self.message.value = _message(text)


# ---------------------------------------------------------------------------- query options
class QueryOptions(widgets.VBox):
    """Choose what to ask for; invalid choices show a message instead of a query.

    Parameters
    ----------
    recs, rec_type, amp_props, cohort_ids, computations, computation_ids, predictions, propensity_type
        Initial values, as in :func:`amptools.controller.build_query`.
    known : mapping, optional
        Ids to suggest, by kind (``"recs"``, ``"computations"``, ``"predictions"``);
        shown as hints, not enforced (an org may have ids the explorer does not know).

    Attributes
    ----------
    query : ProfileQuery
        The query the form describes (raises :class:`InvalidQueryError` when invalid).
    error : str or None
        Why the form is invalid, or None.
    """

    def __init__(
        self,
        *,
        recs: Sequence[str] = (),
        rec_type: str | None = None,
        amp_props: bool = True,
        cohort_ids: bool = True,
        computations: str = "none",
        computation_ids: Sequence[str] = (),
        predictions: Sequence[str] = (),
        propensity_type: str = "score",
        known: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        known = known or {}
        self._callbacks: list[Callable[[QueryOptions], None]] = []
        tags = widgets.Layout(width="330px")
        fixed = widgets.Layout(flex="0 0 auto", width="auto")
        self.recs = widgets.TagsInput(value=list(recs), allow_duplicates=False, layout=tags)
        self.rec_type = widgets.Dropdown(
            options=[("experiment's setting", ""), ("model", "model"), ("random", "random")],
            value=rec_type or "", description="rec_type", layout=widgets.Layout(width="260px"),
        )
        self.amp_props = widgets.Checkbox(value=amp_props, description="user properties", indent=False)
        self.cohort_ids = widgets.Checkbox(value=cohort_ids, description="cohorts", indent=False)
        self.computations = widgets.ToggleButtons(
            options=[("none", "none"), ("all", "all"), ("chosen", "chosen")], value=computations,
            style={"button_width": "70px"}, layout=fixed,
        )
        self.computation_ids = widgets.TagsInput(value=list(computation_ids), allow_duplicates=False,
                                                 layout=widgets.Layout(width="330px"))
        self.predictions = widgets.TagsInput(value=list(predictions), allow_duplicates=False,
                                             layout=widgets.Layout(width="330px"))
        self.propensity_type = widgets.ToggleButtons(
            options=[("score (0–1)", "score"), ("percentile", "pct")], value=propensity_type,
            style={"button_width": "100px"}, layout=widgets.Layout(flex="0 0 auto", width="auto"),
        )
        self.message = widgets.HTML()

        def row(label: str, *children: widgets.Widget, hint: Sequence[str] = ()) -> widgets.HBox:
            parts: list[widgets.Widget] = [widgets.HTML(f"<b>{html.escape(label)}</b>",
                                                        layout=widgets.Layout(width="130px")), *children]
            if hint:
                parts.append(widgets.HTML(f"<small style='color:#777'>known: "
                                          f"{html.escape(', '.join(hint))}</small>"))
            return widgets.HBox(parts, layout=widgets.Layout(align_items="center"))

        super().__init__([
            row("Recommendations", self.recs, self.rec_type, hint=known.get("recs", ())),
            row("Include", self.amp_props, self.cohort_ids),
            row("Computations", self.computations, self.computation_ids, hint=known.get("computations", ())),
            row("Propensities", self.predictions, self.propensity_type, hint=known.get("predictions", ())),
            self.message,
        ])
        for widget in (self.recs, self.rec_type, self.amp_props, self.cohort_ids, self.computations,
                       self.computation_ids, self.predictions, self.propensity_type):
            widget.observe(self._changed, names="value")
        self._changed()

    @property
    def values(self) -> dict[str, Any]:
        """The form's plain values (the keywords of :func:`amptools.controller.build_query`)."""
        return {
            "recs": list(self.recs.value),
            "rec_type": self.rec_type.value or None,
            "amp_props": bool(self.amp_props.value),
            "cohort_ids": bool(self.cohort_ids.value),
            "computations": self.computations.value,
            "computation_ids": list(self.computation_ids.value),
            "predictions": list(self.predictions.value),
            "propensity_type": self.propensity_type.value,
        }

    @property
    def query(self) -> ProfileQuery:
        """The :class:`ProfileQuery`; raises :class:`InvalidQueryError` with what to fix."""
        query, error = logic.check_query(**self.values)
        if query is None:
            raise InvalidQueryError(error)
        return query

    @property
    def error(self) -> str | None:
        """Why the current choices are invalid, or None."""
        return logic.check_query(**self.values)[1]

    @property
    def valid(self) -> bool:
        return self.error is None

    def on_change(self, callback: Callable[[QueryOptions], None]) -> None:
        """Call ``callback(options)`` whenever a choice changes."""
        self._callbacks.append(callback)

    def _changed(self, _change: Any = None) -> None:
        self.computation_ids.layout.display = "" if self.computations.value == "chosen" else "none"
        self.message.value = _message(self.error, error=True)
        for callback in self._callbacks:
            callback(self)


# ---------------------------------------------------------------------------- the explorer
class ProfileExplorer(widgets.VBox):
    """Choose users and options, fetch in the background, browse tables and charts, export.

    Parameters
    ----------
    client : ProfileClient
        Who fetches (``amp.connect()``).
    org_ids, org_device_ids : sequence of str, optional
        The org's user ids (and device ids) for the "Sample org users" pick. For a
        sample-org client (``client.is_sample``) the default sample org's ids are
        used when not given.
    export_folder : str or Path
        Where exports are written (``./exports``); changeable in the Export tab.
    workers : int
        Threads of a fetch.
    cache : str or Path, optional
        A profile cache: answers kept there are not fetched (nor exposed) again.
    sample_size : int
        The initial number of sampled users.
    cohort_client : CohortClient, optional
        Adds "From a cohort" to the user chooser and shows cohorts by name. By
        default the sample org's (for a sample-org client), else one from
        ``AMPLITUDE_API_KEY`` + ``AMPLITUDE_SECRET_KEY`` when both are set.
    store : str or Path, optional
        The snapshot store the "Over time" tab opens (``./snapshots`` by default;
        changeable in the tab): fetches are saved there, and two snapshots compared.

    Attributes
    ----------
    controller : ExplorerController
        The state and actions; ``explorer.controller.tables`` holds the results.
    users : UserChooser
    options : QueryOptions
    figure : plotly.graph_objects.Figure or None
        The chart shown in the Charts tab.
    last_export : Path or None
        The file the last export wrote.
    """

    def __init__(
        self,
        client: ProfileClient,
        *,
        org_ids: Sequence[str] | None = None,
        org_device_ids: Sequence[str] | None = None,
        export_folder: str | Path = logic.DEFAULT_EXPORT_FOLDER,
        workers: int = 4,
        cache: str | Path | None = None,
        sample_size: int = 10,
        cohort_client: CohortClient | None = None,
        store: str | Path | None = None,
    ) -> None:
        if cohort_client is None:
            cohort_client = _default_cohort_client(client)
        self.controller = ExplorerController(client, workers=workers, cache=cache, export_folder=export_folder,
                                             cohort_names=cohort_client)
        # The sample server the client talks to (not a default org): its ids are the ones it knows.
        server = sample_server(client)
        is_sample = server is not None
        if org_ids is None and server is not None:
            org_ids, org_device_ids = server.org.user_ids, server.org.device_ids
        self.users = UserChooser(org_ids=org_ids, org_device_ids=org_device_ids, sample_size=sample_size,
                                 cohorts=CohortPicker(cohort_client) if cohort_client is not None else None)
        if server is not None:
            known = _sample_known_ids(server.org.definition)
            self.options = QueryOptions(recs=known["recs"][:2], computations="all",
                                        predictions=known["predictions"][:1], known=known)
        else:
            self.options = QueryOptions()
        self.figure: go.Figure | None = None
        self.last_export: Path | None = None

        self.fetch_button = widgets.Button(description="Fetch", button_style="primary", icon="download")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="",
                                            layout=widgets.Layout(width="260px"))
        self.status = widgets.HTML()
        self.quota = widgets.HTML()
        self.notes = widgets.HTML()
        self.fetch_button.on_click(self._fetch)
        self.cancel_button.on_click(self._cancel)
        self.users.on_change(lambda _: self._refresh_fetch_button())
        self.options.on_change(lambda _: self._refresh_fetch_button())

        self.table_views: dict[str, widgets.HTML] = {}
        children: list[widgets.Widget] = []
        for _, name in RESULT_TABS:
            if name is not None:
                self.table_views[name] = widgets.HTML("<p><i>Fetch to see results.</i></p>")
                children.append(self.table_views[name])
        self._build_charts_tab()
        self._build_export_tab()
        children += [self.charts_tab, self.export_tab]
        self._build_preview_tab()
        children.append(self.preview_tab)
        self._build_over_time_tab(store)
        children.append(self.over_time_tab)
        self.results = widgets.Tab(children=children, titles=[title for title, _ in RESULT_TABS])

        org = "the embedded sample org (synthetic data)" if is_sample else html.escape(
            getattr(client, "base_url", "the Profile API"))
        super().__init__([
            widgets.HTML(f"<h3 style='margin:4px 0'>Profile explorer</h3><small>Fetching from {org}.</small>"),
            widgets.HTML("<b>Users</b>"), self.users,
            widgets.HTML("<b>Ask for</b>"), self.options,
            widgets.HBox([self.fetch_button, self.cancel_button, self.progress, self.status, self.quota],
                         layout=widgets.Layout(align_items="center", flex_flow="row wrap")),
            self.notes,
            self.results,
        ])
        self._refresh_fetch_button()

    # -- plain access --------------------------------------------------------------
    @property
    def tab_names(self) -> list[str]:
        """The titles of the result tabs, in order."""
        return [title for title, _ in RESULT_TABS]

    def select_tab(self, title: str) -> None:
        """Show the result tab ``title`` (``"Charts"``, ``"Summary"``, ...)."""
        self.results.selected_index = self.tab_names.index(title)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the running fetch ended and the results are shown; False on timeout."""
        return self.controller.wait(timeout)

    # -- fetching ------------------------------------------------------------------
    def _refresh_fetch_button(self) -> None:
        running = self.controller.running
        problem = self.options.error
        if problem is None and not self.users.ids:
            problem = "Choose at least one user."
        self.fetch_button.disabled = running or problem is not None
        self.cancel_button.disabled = not running
        if not running:
            self.status.value = _message(problem, error=True) if problem else _message(
                self.controller.status_text() or "Ready.")

    def _fetch(self, _button: Any = None) -> None:
        try:
            query = self.options.query
        except InvalidQueryError as error:
            self.status.value = _message(str(error), error=True)
            return
        ids = self.users.ids
        # The running state is shown before the fetch starts: a quick fetch may end
        # (and show its results) before start() returns.
        self.fetch_button.disabled = True
        self.cancel_button.disabled = False
        self.progress.bar_style = ""
        self.progress.value, self.progress.max = 0, max(1, len(ids))
        self.status.value = _message(f"Fetching {len(ids):,} users…")
        try:
            note = self.controller.start(ids, query, id_type=self.users.id_type,
                                         on_progress=self._on_progress, on_done=self._on_done)
        except (InvalidQueryError, RuntimeError) as error:
            self.cancel_button.disabled = True
            self.fetch_button.disabled = self.controller.running
            self.status.value = _message(str(error), error=True)
            return
        if note:
            self.notes.value = f"<div style='{_NOTE_STYLE}'>⚠ {html.escape(note)}</div>"

    def _cancel(self, _button: Any = None) -> None:
        self.controller.cancel()
        self.cancel_button.disabled = True
        self.status.value = _message("Cancelling: waiting for the requests in flight…")

    def _on_progress(self, done: int, total: int, counts: Mapping[str, int]) -> None:
        self.progress.max = max(1, total)
        self.progress.value = done
        failed = counts.get("failed", 0) + counts.get("not_found", 0)
        self.status.value = _message(f"{done:,} / {total:,}" + (f" ({failed:,} not fetched)" if failed else ""))
        self.quota.value = _message(self.controller.quota_text())

    def _on_done(self, controller: ExplorerController) -> None:
        tables = controller.tables
        for name, view in self.table_views.items():
            if name in tables:
                view.value = logic.table_html(tables[name])
        self.progress.bar_style = "warning" if controller.result is None or controller.result.cancelled else "success"
        self._refresh_charts()
        self._refresh_export_choices()
        self._refresh_preview_tab()
        self.snapshot_save.disabled = controller.result is None
        # The fetch counts as running until on_done returns; the buttons follow it.
        self.fetch_button.disabled = False
        self.cancel_button.disabled = True
        message = controller.status_text()
        self.status.value = _message(message, error=controller.error is not None)
        self.quota.value = _message(controller.quota_text())
        if self.options.error is not None or not self.users.ids:
            self.fetch_button.disabled = True

    # -- charts ----------------------------------------------------------------------
    def _build_charts_tab(self) -> None:
        self.chart_picker = widgets.Dropdown(options=[], description="Chart", layout=widgets.Layout(width="360px"))
        self.chart_options_box = widgets.HBox()
        self.chart_option_widgets: dict[str, widgets.ValueWidget] = {}
        self.chart_output = widgets.Output()
        self.chart_message = widgets.HTML()
        self.chart_picker.observe(self._chart_picked, names="value")
        self.charts_tab = widgets.VBox([self.chart_picker, self.chart_options_box, self.chart_message,
                                        self.chart_output])

    def _refresh_charts(self) -> None:
        names = self.controller.available_charts()
        current = self.chart_picker.value
        self.chart_picker.options = [(logic.CHARTS[n].label, n) for n in names]
        if names:
            self.chart_picker.value = current if current in names else names[0]
            self._chart_picked()
        else:
            self.chart_message.value = _message("No chart: the results hold no recommendations, cohorts, "
                                                "computations or propensities.")
            self.chart_output.outputs = ()
            self.figure = None

    def _chart_picked(self, _change: Any = None) -> None:
        name = self.chart_picker.value
        if not name:
            return
        self.chart_option_widgets = {o.name: self._option_widget(o) for o in self.controller.chart_options(name)}
        for widget in self.chart_option_widgets.values():
            widget.observe(lambda _: self.draw_chart(), names="value")
        self.chart_options_box.children = list(self.chart_option_widgets.values())
        self.draw_chart()

    @staticmethod
    def _option_widget(option: ChartOption) -> widgets.ValueWidget:
        if option.is_number:
            return widgets.BoundedIntText(value=option.default, min=option.minimum, max=option.maximum,
                                          description=option.label, layout=widgets.Layout(width="160px"))
        return widgets.Dropdown(options=list(option.choices), value=option.default, description=option.label,
                                layout=widgets.Layout(width="260px"))

    def draw_chart(self) -> go.Figure | None:
        """Build the picked chart with the options shown, show it, and return it."""
        name = self.chart_picker.value
        if not name:
            return None
        values = {key: widget.value for key, widget in self.chart_option_widgets.items()}
        try:
            figure = self.controller.figure(name, **values)
        except (LookupError, ValueError) as error:
            self.chart_message.value = _message(str(error), error=True)
            return None
        self.figure = figure
        self.chart_message.value = ""
        self.chart_output.outputs = (_figure_output(figure),)
        return figure

    # -- export --------------------------------------------------------------------------
    def _build_export_tab(self) -> None:
        self.export_choice = widgets.Dropdown(
            options=[(label, n) for n, (label, _) in logic.MARKETING_EXPORTS.items()]
            + [(n.replace("_", " "), n) for n in logic.TABLE_NAMES],
            value="marketing", description="Export", layout=widgets.Layout(width="420px"))
        self.export_rec_id = widgets.Dropdown(options=[("(the only one)", None)], description="rec set",
                                              layout=widgets.Layout(width="260px"))
        self.export_top_n = widgets.BoundedIntText(value=5, min=1, max=100, description="top items",
                                                   layout=widgets.Layout(width="160px"))
        self.export_cohorts = widgets.Checkbox(value=True, description="cohort columns", indent=False)
        self.export_props = widgets.Checkbox(value=False, description="property columns", indent=False)
        self.export_pii = widgets.Checkbox(value=False, description="include personal data (email, phone…)",
                                           indent=False)
        self.export_folder = widgets.Text(value=str(self.controller.export_folder), description="Folder",
                                          layout=widgets.Layout(width="360px"))
        self.export_button = widgets.Button(description="Export CSV", icon="file", disabled=True)
        self.export_link = widgets.HTML()
        self.marketing_box = widgets.HBox([self.export_rec_id, self.export_top_n, self.export_cohorts,
                                           self.export_props, self.export_pii])
        self.export_choice.observe(self._export_choice_changed, names="value")
        self.export_button.on_click(self._export)
        self.export_tab = widgets.VBox([
            widgets.HBox([self.export_choice, self.export_folder]), self.marketing_box,
            self.export_button, self.export_link,
            widgets.HTML("<small>Excel CSV: for people (UTF-8 with BOM; cells starting with = + - @ are "
                         "defused). For Braze: its CSV user import, or /users/track JSON bodies that keep "
                         "the item lists. The link downloads it; the file stays in the folder.</small>"),
        ])

    def _export_choice_changed(self, _change: Any = None) -> None:
        self.marketing_box.layout.display = "" if self.export_choice.value in logic.MARKETING_EXPORTS else "none"

    def _refresh_export_choices(self) -> None:
        result = self.controller.result
        recs = list(result.query.recs) if result is not None else []
        self.export_rec_id.options = [(r, r) for r in recs] or [("(the only one)", None)]
        self.export_button.disabled = result is None

    def export(self) -> Path | None:
        """Write the chosen table with the chosen options; show and return its path."""
        name = self.export_choice.value
        options: dict[str, Any] = {}
        if name in logic.MARKETING_EXPORTS:
            options = {"rec_id": self.export_rec_id.value, "top_n": int(self.export_top_n.value),
                       "cohorts": bool(self.export_cohorts.value),
                       "props": True if self.export_props.value else (), "include_pii": bool(self.export_pii.value)}
        try:
            path = self.controller.export(name, folder=self.export_folder.value.strip() or ".", **options)
        except (LookupError, ValueError, OSError) as error:
            # A BrazeImportError lists one problem a line: keep the lines.
            self.export_link.value = _message(f"Export failed: {error}", error=True).replace("\n", "<br>")
            return None
        self.last_export = path
        notes = "".join(f"<br>{_message(w)}" for w in self.controller.export_warnings)
        self.export_link.value = "<br>".join(map(logic.download_link, self.controller.exported)) + notes
        return path

    def _export(self, _button: Any = None) -> None:
        self.export()

    # -- message preview -------------------------------------------------------------------
    def _build_preview_tab(self) -> None:
        self.preview_template = widgets.Textarea(
            placeholder="A Braze message with {% connected_content %} (filled in after a fetch)",
            layout=widgets.Layout(width="100%", height="200px"))
        self.preview_button = widgets.Button(description="Preview", icon="eye", disabled=True)
        self.preview_message = widgets.HTML()
        self.preview_view = widgets.HTML("<p><i>Fetch, then preview every user's message.</i></p>")
        self.previews: Any = None
        self._prefilled = ""
        self.preview_button.on_click(self._preview)
        self.options.on_change(lambda _: self._prefill_template())
        self._prefill_template()
        self.preview_tab = widgets.VBox([
            widgets.HTML("<small>Braze Liquid: the <code>connected_content</code> call is answered from "
                         "the fetched profiles (no request is made); <code>${name}</code> reads the "
                         "user's properties. Errors, aborted messages and empty variables come "
                         "first.</small>"),
            self.preview_template, widgets.HBox([self.preview_button, self.preview_message]),
            self.preview_view,
        ])

    def _prefill_template(self, query: ProfileQuery | None = None) -> None:
        """The starter message for ``query`` (the form's), unless the analyst wrote their own."""
        if self.preview_template.value not in ("", self._prefilled):
            return
        try:
            self._prefilled = self.controller.message_template(query or self.options.query)
        except (LookupError, InvalidQueryError):  # the form is invalid: keep what is shown
            return
        self.preview_template.value = self._prefilled

    def _refresh_preview_tab(self) -> None:
        result = self.controller.result
        self.preview_button.disabled = result is None
        if result is not None:
            self._prefill_template(result.query)

    def preview(self) -> pd.DataFrame | None:
        """Render the template for every fetched user; show and return the previews."""
        try:
            previews = self.controller.preview_messages(self.preview_template.value)
        except (LookupError, InvalidQueryError) as error:
            self.preview_message.value = _message(str(error), error=True)
            return None
        self.previews = previews
        self.preview_message.value = _message(self.controller.preview_summary(previews),
                                              error=bool((previews["status"] == "error").any()))
        self.preview_view.value = logic.table_html(previews)
        return previews

    def _preview(self, _button: Any = None) -> None:
        self.preview()


    # -- over time (snapshots) -----------------------------------------------------------
    def _build_over_time_tab(self, store: str | Path | None) -> None:
        self.over_time: OverTime | None = None
        self.store_path = widgets.Text(value=str(store if store is not None else "snapshots"), description="Store",
                                       layout=widgets.Layout(width="360px"))
        self.store_open = widgets.Button(description="Open", icon="folder-open")
        self.snapshot_label = widgets.Text(placeholder="label (optional)", layout=widgets.Layout(width="200px"))
        self.snapshot_save = widgets.Button(description="Save this fetch", icon="save", disabled=True)
        self.snapshot_before = widgets.Dropdown(options=[], description="From", layout=widgets.Layout(width="520px"))
        self.snapshot_after = widgets.Dropdown(options=[], description="To", layout=widgets.Layout(width="520px"))
        self.compare_button = widgets.Button(description="Compare", icon="exchange", disabled=True)
        self.over_time_chart = widgets.Dropdown(options=[(label, name) for name, label in logic.OVER_TIME_CHARTS.items()],
                                                description="Chart", layout=widgets.Layout(width="420px"))
        self.over_time_group = widgets.Dropdown(options=[], description="Set", layout=widgets.Layout(width="260px"))
        self.over_time_message = widgets.HTML()
        self.over_time_summary = widgets.HTML()
        self.over_time_output = widgets.Output()
        self.over_time_figure: go.Figure | None = None
        self.store_open.on_click(lambda _: self.open_store())
        self.snapshot_save.on_click(lambda _: self.save_snapshot())
        self.compare_button.on_click(lambda _: self.compare_snapshots())
        self.over_time_chart.observe(lambda _: self.draw_over_time(), names="value")
        self.over_time_group.observe(lambda _: self.draw_over_time(), names="value")
        self.over_time_tab = widgets.VBox([
            widgets.HBox([self.store_path, self.store_open, self.snapshot_label, self.snapshot_save]),
            self.snapshot_before, self.snapshot_after, self.compare_button, self.over_time_message,
            self.over_time_summary, widgets.HBox([self.over_time_chart, self.over_time_group]), self.over_time_output,
            widgets.HTML("<small>A store keeps snapshots of fetches (<code>amptools fetch --snapshot</code> "
                         "or \"Save this fetch\"); compare two of one org and query to see what changed.</small>"),
        ])

    def open_store(self) -> list[tuple[str, str]]:
        """Read the store named in the tab; offer its snapshots (the newest two preselected)."""
        try:
            self.over_time = OverTime(self.store_path.value.strip() or "snapshots")
        except (ValueError, OSError) as error:
            self.over_time = None
            self.over_time_message.value = _message(str(error), error=True)
            return []
        choices = self.over_time.choices()
        self.snapshot_before.options = choices
        self.snapshot_after.options = choices
        if len(choices) >= 2:
            self.snapshot_before.value, self.snapshot_after.value = choices[-2][1], choices[-1][1]
        self.compare_button.disabled = len(choices) < 2
        self.over_time_message.value = _message(
            f"{len(choices)} snapshots." if len(choices) >= 2 else
            f"{len(choices)} snapshot(s): save at least two (a fetch now, another later) to compare.")
        return choices

    def save_snapshot(self) -> str | None:
        """Keep the last fetch in the store; return the snapshot's id."""
        try:
            snapshot = self.controller.save_snapshot(self.store_path.value.strip() or "snapshots",
                                                     label=self.snapshot_label.value.strip() or None)
        except (LookupError, ValueError, OSError) as error:
            self.over_time_message.value = _message(f"Not saved: {error}", error=True)
            return None
        self.open_store()
        self.over_time_message.value = _message(f"Saved snapshot {snapshot}.")
        return snapshot

    def compare_snapshots(self) -> pd.DataFrame | None:
        """Compare the two chosen snapshots: the summary, then the chosen figure."""
        if self.over_time is None:
            self.open_store()
        if self.over_time is None:
            return None
        try:
            self.over_time.compare(self.snapshot_before.value, self.snapshot_after.value)
            summary = self.over_time.summary()
        except (ValueError, LookupError) as error:
            self.over_time_message.value = _message(str(error), error=True)
            return None
        self.over_time_message.value = _message(self.over_time.describe())
        self.over_time_summary.value = logic.table_html(summary)
        groups = self.over_time.groups()
        self.over_time_group.options = groups
        if groups:
            self.over_time_group.value = groups[0]
        self.draw_over_time()
        return summary

    def draw_over_time(self) -> go.Figure | None:
        """Build the chosen figure of the two snapshots compared, show it, and return it."""
        over_time = self.over_time
        if over_time is None or over_time.before is None:
            return None
        name = self.over_time_chart.value
        self.over_time_group.layout.display = "" if name in ("item_churn", "rank_shift") else "none"
        try:
            figure = over_time.figure(name, group=self.over_time_group.value) if name in (
                "item_churn", "rank_shift") else over_time.figure(name)
        except (LookupError, ValueError) as error:
            self.over_time_message.value = _message(str(error), error=True)
            return None
        self.over_time_figure = figure
        self.over_time_output.outputs = (_figure_output(figure),)
        return figure


def _figure_output(figure: go.Figure) -> dict[str, Any]:
    """A display_data output for a figure: plotly's own mime type (JupyterLab renders it)."""
    import plotly.io as pio

    bundle = pio.renderers["plotly_mimetype"].to_mimebundle(figure.to_dict())
    title = figure.layout.title.text or "plotly figure"
    bundle["text/plain"] = f"<Figure: {title}>"
    return {"output_type": "display_data", "data": bundle, "metadata": {}}


def _sample_known_ids(definition: Mapping[str, Any]) -> dict[str, list[str]]:
    """Rec, computation and prediction ids of a sample org's definition, to suggest and to preset."""
    return {
        "recs": [r["rec_id"] for r in definition["recommendations"]["rec_ids"]]
        + [r["rec_id"] for r in definition["test_user"].get("recommendations", [])],
        "computations": [c["id"] for c in definition["computations"]],
        "predictions": [p["id"] for p in definition["predictions"]],
    }
