"""Previews: every user's message rendered as Braze would render it at send time.

Package-internal: the public surface is :mod:`amptools.braze`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import numpy as np
import pandas as pd
from liquid.exceptions import LiquidError

from .._types import ProfilesLike
from ..errors import AmptoolsWarning, InvalidQueryError, warn
from ..models import UserProfile
from ..query import ID_TYPES, ProfileQuery
from . import dialect
from .tag import UNKNOWN_USER_BODY, parse_tag, read_url

__all__ = [
    "PREVIEW_COLUMNS",
    "PREVIEW_STATUSES",
    "RetryAbortWarning",
    "preview",
    "sort_for_review",
]

PREVIEW_COLUMNS: tuple[str, ...] = (
    "user_id", "device_id", "status", "message", "abort_reason", "error", "unresolved",
)
_PREVIEW_DTYPES = dict.fromkeys(PREVIEW_COLUMNS, "str")
#: ``status`` of a preview row (a fetch's outcomes are :data:`amptools.query.STATUSES`).
PREVIEW_STATUSES = ("rendered", "aborted", "error")
#: What a failed call with ``:retry`` ends in, when the template does not abort first.
RETRIES_EXHAUSTED = ("the Connected Content call failed; Braze retries it (:retry) up to 5 times "
                     "and then aborts the message")


class RetryAbortWarning(AmptoolsWarning):
    """The template aborts when a ``:retry`` call fails, so Braze never retries it."""


# ---------------------------------------------------------------------------- answering the call
def _inferred_query(profiles: Sequence[UserProfile]) -> ProfileQuery:
    """What a list of profiles was fetched with, read from what they hold."""
    recs: dict[str, None] = {}
    predictions: dict[str, None] = {}
    kinds = set()
    amp_props = cohorts = computations = False
    for profile in profiles:
        for rec in profile.recommendations or ():
            recs[rec.rec_id] = None
        amp_props |= profile.amp_props is not None
        cohorts |= profile.cohort_ids is not None
        computations |= profile.computations is not None
        for propensity in profile.propensities or ():
            if propensity.prediction_id:
                predictions[propensity.prediction_id] = None
            kinds.add(propensity.propensity_type)
    return ProfileQuery(recs=tuple(recs), amp_props=amp_props, cohort_ids=cohorts,
                        computations=computations, predictions=tuple(predictions),
                        propensity_type="pct" if kinds == {"pct"} else "score")


def _missing(asked: ProfileQuery, fetched: ProfileQuery) -> list[str]:
    """What ``asked`` needs that profiles fetched with ``fetched`` do not hold."""
    missing = []
    absent = [r for r in asked.recs if r not in fetched.recs]
    if absent:
        held = ", ".join(fetched.recs) or "none"
        missing.append(f"rec_id {', '.join(absent)} (the profiles hold rec_id {held})")
    if asked.recs and asked.rec_type != fetched.rec_type:
        missing.append(f"rec_type={asked.rec_type or '(the experiment setting)'} (fetched with "
                       f"rec_type={fetched.rec_type or '(the experiment setting)'})")
    if asked.amp_props and not fetched.amp_props:
        missing.append("get_amp_props (the profiles were fetched without user properties)")
    if asked.cohort_ids and not fetched.cohort_ids:
        missing.append("get_cohort_ids (the profiles were fetched without cohorts)")
    if asked.computations is True and fetched.computations is not True:
        missing.append("get_computations (the profiles were fetched without all computations)")
    elif isinstance(asked.computations, tuple) and fetched.computations is not True:
        held_comps = fetched.computations or ()
        absent = [c for c in asked.computations if c not in held_comps]
        if absent:
            missing.append(f"comp_id {', '.join(absent)}")
    absent = [p for p in asked.predictions if p not in fetched.predictions]
    if absent:
        missing.append(f"prediction_id {', '.join(absent)}")
    elif asked.predictions and asked.propensity_type != fetched.propensity_type:
        missing.append(f"propensity_type={asked.propensity_type} (fetched as {fetched.propensity_type})")
    return missing


def _body(profile: UserProfile, asked: ProfileQuery) -> dict[str, Any]:
    """The JSON one call asking ``asked`` would have answered for this profile.

    Built from the profile's own payloads: a split fetch's two bodies become the one
    merged body Braze receives, and what the tag did not ask for is left out (null),
    as the API does.
    """
    raw = profile.raw.get("userData") if isinstance(profile.raw, Mapping) else None
    data: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {
        "user_id": profile.user_id, "device_id": profile.device_id}
    recs = None
    if asked.recs:
        by_id = {r.get("rec_id"): r for r in (data.get("recommendations") or ()) if isinstance(r, Mapping)}
        recs = [by_id[r] for r in asked.recs if r in by_id]
    data["recommendations"] = recs
    amp_props: dict[str, Any] | None = None
    if asked.amp_props or asked.asks_computations:
        amp_props = {}
        if asked.amp_props:
            amp_props.update(profile.amp_props or {})
        computations = profile.computations or {}
        if asked.computations is True:
            amp_props.update(computations)
        elif isinstance(asked.computations, tuple):
            amp_props.update({c: computations.get(c) for c in asked.computations})
    data["amp_props"] = amp_props
    data["cohort_ids"] = list(profile.cohort_ids or ()) if asked.cohort_ids else None
    for key in ("propensity", "propensities", "predictions"):
        data.pop(key, None)
    if asked.predictions:
        entries = [{"prop": p.value, "pred_id": p.prediction_id, "prop_type": p.propensity_type}
                   for p in profile.propensities or () if p.prediction_id in asked.predictions]
        data["propensity"] = entries[0]["prop"] if len(entries) == 1 else None
        data["propensities"] = entries
    # JSON nulls are left out: Liquid reads a missing key as nil too (same output, same
    # comparisons), but only a missing key tells the preview a variable rendered empty.
    if data["amp_props"] is not None:
        data["amp_props"] = {k: v for k, v in data["amp_props"].items() if v is not None}
    return {"userData": {k: v for k, v in data.items() if v is not None}}


@dataclass
class _Row:
    """One row to preview: a profile, or an id the API did not answer with one."""

    user_id: str | None
    device_id: str | None
    profile: UserProfile | None = None
    http_status: int | None = None
    error: str | None = None
    not_found: bool = False


class _Responder:
    """Answers the template's connected_content calls for one row at a time.

    As Braze does: ``__http_status_code__`` is added only to a JSON object answered with
    a 2XX status (Braze's "Local Connected Content variables"); an unknown user's body is
    saved without it; a failed call saves nothing.
    """

    def __init__(self, fetched: ProfileQuery) -> None:
        self.fetched = fetched
        self.row: _Row | None = None
        self.failing = False  # answer every call as failed (the retry probe)
        self._asked: dict[tuple[str, str], ProfileQuery] = {}

    def answer(self, url: str, *, retry: bool = False) -> dict[str, Any] | None:
        # Every user's URL differs only in its id: the rest is read (and checked) once.
        base, _, query_string = url.partition("?")
        ids: dict[str, str] = {}
        others = []
        for piece in query_string.split("&"):
            name, _, value = piece.partition("=")
            if name in ID_TYPES:
                ids[name] = unquote_plus(value)  # as parse_qsl reads it
            else:
                others.append(piece)
        key = (base, "&".join(others))
        asked = self._asked.get(key)
        if asked is None:
            _, asked = read_url(f"{base}?{key[1]}")
            missing = _missing(asked, self.fetched)
            if missing:
                raise InvalidQueryError(
                    "the template asks for what the profiles were not fetched with: "
                    f"{'; '.join(missing)}. Fetch again with a query that includes it "
                    "(amptools.braze.parse_tag(template).query is what the tag asks).")
            self._asked[key] = asked
        row = self.row
        assert row is not None
        if not ids or not any(ids.values()):
            # What the API answers a call without an id (the user's attribute was empty).
            return {"error": "user_id or device_id is required"}
        for name, value in ids.items():
            own = getattr(row, name)
            if own is not None and value != own:
                raise InvalidQueryError(f"the URL asks for {name} {value!r} but this row is {own!r}: "
                                        f"use {{{{${{{name}}} | url_param_escape}}}} in the URL.")
        if self.failing or (row.profile is None and not row.not_found):
            # A failed call (an error status, a timeout): Braze saves no answer. With :retry
            # it calls again later, unless the template aborts first.
            state = dialect.render_state_now()
            if retry and state is not None:
                state.retried_call_failed = True
            return None
        if row.profile is None:
            # An unknown user gets the API's documented body, not amptools' explanation of it.
            return {"error": UNKNOWN_USER_BODY}
        return {**_body(row.profile, asked), "__http_status_code__": 200}


def _rows(profiles: Any) -> tuple[list[_Row], ProfileQuery]:
    from ..bulk import ProfileSet

    if isinstance(profiles, ProfileSet):
        rows = []
        for id_ in profiles.ids:
            outcome = profiles.outcome(id_)
            profile = outcome.profile
            if profile is not None:
                rows.append(_Row(profile.user_id, profile.device_id, profile))
                continue
            not_found = outcome.status == "not_found"
            rows.append(_Row(
                user_id=id_ if profiles.id_type == "user_id" else None,
                device_id=id_ if profiles.id_type == "device_id" else None,
                http_status=outcome.http_status or (400 if not_found else None),
                error=outcome.error, not_found=not_found,
            ))
        return rows, profiles.query
    if isinstance(profiles, UserProfile):
        profiles = [profiles]
    if not isinstance(profiles, Iterable) or isinstance(profiles, (str, bytes, Mapping)):
        raise InvalidQueryError(f"profiles must be a ProfileSet or a list of UserProfile, got "
                                f"{type(profiles).__name__}.")
    listed = list(profiles)
    bad = [type(p).__name__ for p in listed if not isinstance(p, UserProfile)]
    if bad:
        raise InvalidQueryError(f"profiles must be UserProfile objects, got {bad[0]}; fetch them with "
                                "client.get_profiles(...) or pass the ProfileSet itself.")
    return [_Row(p.user_id, p.device_id, p) for p in listed], _inferred_query(listed)


def _attribute_lookup(attributes: Any) -> dict[str, dict[str, Any]]:
    """``{user_id: {name: value}}`` from a table keyed by user id (missing values left out)."""
    if attributes is None:
        return {}
    if isinstance(attributes, pd.DataFrame):
        frame = attributes if "user_id" in attributes.columns else attributes.reset_index()
        if "user_id" not in frame.columns:
            raise InvalidQueryError(
                "attributes needs a user_id column (or index), e.g. amptools.tables.properties(ps); "
                f"it has {', '.join(map(str, attributes.columns))}.")
        names = [c for c in frame.columns if c != "device_id"]
        out: dict[str, dict[str, Any]] = {}
        for record in frame[names].to_dict("records"):
            key = record["user_id"]
            if isinstance(key, str):
                out[key] = {str(k): v for k, v in record.items()
                            if not (v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA)}
        return out
    if isinstance(attributes, Mapping):
        return {str(k): dict(v) for k, v in attributes.items()}
    raise InvalidQueryError(f"attributes must be a DataFrame keyed by user_id or a mapping "
                            f"{{user_id: {{name: value}}}}, got {type(attributes).__name__}.")


def preview(
    template: str,
    profiles: ProfilesLike,
    *,
    attributes: pd.DataFrame | Mapping[str, Mapping[str, object]] | None = None,
    query: ProfileQuery | None = None,
) -> pd.DataFrame:
    """Render a Braze message for every user, as Braze would at send time.

    The template is read as Braze reads it and parsed once with python-liquid (a real
    Liquid engine), then rendered for each user. Braze's pieces are added:
    ``{% connected_content URL ... %}`` is answered from the user's fetched profile (the
    body one call with the URL's parameters would have returned, with
    ``__http_status_code__`` 200); a user the API did not know (``not_found``) answers
    with the API's body ``{"error": "User id and device id not seen before"}`` and no
    ``__http_status_code__`` (Braze adds it only to 2XX answers), and a failed fetch
    saves no answer, so the template's guard runs as it would in Braze.
    ``{% abort_message('why') %}`` stops the message; ``${name}`` and
    ``custom_attribute.${name}`` read ``attributes`` (``${user_id}`` and ``${device_id}``
    are the profile's own); an output ``{{ }}`` inside a tag or a filter argument stands
    for its value; Braze's filters (``money``, ``url_param_escape``, ``sha2``,
    ``json_parse``, ``time_zone`` ...) are available and the ones Braze does not support
    are errors. A failed call of a tag with ``:retry`` ends the message as Braze does:
    aborted by the template's own guard (Braze's abort takes precedence over its retry,
    with a :class:`RetryAbortWarning`), or aborted after Braze's retries.
    ``:cache_max_age`` changes nothing in a preview. Every render is bounded (template
    size, loops, sizes, time; ``docs/reliability.md``): a template that goes past a
    bound gives ``error`` rows, never a hang.

    Parameters
    ----------
    template : str
        The message, Braze Liquid.
    profiles : ProfileSet or list of UserProfile
        Who to render for. A ProfileSet also gives rows for its ``not_found`` and
        ``failed`` ids.
    attributes : DataFrame or mapping, optional
        Braze attributes by user: a table with a ``user_id`` column (or index) and one
        column per attribute (e.g. ``amptools.tables.properties(ps)``), or
        ``{user_id: {name: value}}``. Missing values are unresolved.
    query : ProfileQuery, optional
        What a list of profiles was fetched with (a ProfileSet knows its own); inferred
        from the profiles when not given.

    Returns
    -------
    pandas.DataFrame
        One row per user in input order, columns :data:`PREVIEW_COLUMNS`, all ``str``
        (missing where not applicable): ``user_id``, ``device_id``; ``status``: one of
        :data:`PREVIEW_STATUSES` (``rendered``, ``aborted`` or ``error``); ``message``:
        the rendered text with surrounding white space trimmed (rendered only);
        ``abort_reason``: the text of ``abort_message`` (aborted only; Braze's
        ``{% abort_message %} called`` without one); ``error``: what went wrong, with the
        template line (``line 3: ...``), including a call that asks for what the
        profiles were not fetched with; ``unresolved``: the variables that rendered
        empty, comma separated (``${first_name},
        amplitude.userData.recommendations[0].items[0]``).

    Raises
    ------
    InvalidQueryError
        Only for bad arguments (profiles or attributes of the wrong kind); problems of
        the template are rows with ``status="error"``.

    Warns
    -----
    RetryAbortWarning
        When a tag has ``:retry`` and the template aborts if that call fails: Braze
        would abort the message instead of retrying (use ``guard(query, retry=True)``).
    """
    if not isinstance(template, str):
        raise InvalidQueryError(f"template must be text, got {type(template).__name__}.")
    rows, fetched = _rows(profiles)
    if query is not None:
        fetched = query
    lookup = _attribute_lookup(attributes)
    out: dict[str, list[Any]] = {name: [] for name in PREVIEW_COLUMNS}
    responder = _Responder(fetched)
    render = _Renderer(template, responder, lookup)
    for row in rows:
        status, message, reason, error_text, unresolved = render(row)
        out["user_id"].append(row.user_id)
        out["device_id"].append(row.device_id)
        out["status"].append(status)
        out["message"].append(message)
        out["abort_reason"].append(reason)
        out["error"].append(error_text)
        out["unresolved"].append(unresolved)
    render.check_retry(rows)
    return pd.DataFrame(out, columns=list(PREVIEW_COLUMNS)).astype(_PREVIEW_DTYPES)


_Outcome = tuple[str, str | None, str | None, str | None, str | None]


class _Renderer:
    """Renders one row at a time under :data:`amptools.braze.dialect.LIMITS`."""

    def __init__(self, template: str, responder: _Responder, lookup: dict[str, dict[str, Any]]) -> None:
        self.responder = responder
        self.lookup = lookup
        self.translation: dialect.Translation | None = None
        self.parse_error: str | None = None
        self.out_of_time: str | None = None  # set by the first render that ran out of time
        self.retry_aborted = False
        self.retries = False
        try:
            self.translation = dialect.translate(template)
            self.parsed = dialect.environment().from_string(self.translation.text)
        except dialect.TemplateError as error:
            self.parse_error = str(error)
        except LiquidError as error:
            self.parse_error = dialect.error_text(error, self.translation)
        if self.parse_error is None:
            try:
                self.retries = bool(parse_tag(template).options.get("retry"))
            except InvalidQueryError:
                self.retries = False

    def __call__(self, row: _Row) -> _Outcome:
        if self.parse_error is not None:
            return "error", None, None, self.parse_error, None
        if self.out_of_time is not None:
            return "error", None, None, self.out_of_time, None
        state = dialect.RenderState(deadline=time.monotonic() + dialect.LIMITS.seconds)
        self.responder.row = row
        values = self.lookup.get(row.user_id, {}) if row.user_id is not None else {}
        names = {**values, "user_id": row.user_id, "device_id": row.device_id}
        names = {k: v for k, v in names.items() if v is not None}
        context = {dialect.ATTRIBUTES: names, dialect.CUSTOM_ATTRIBUTES: names, dialect.RESPONDER: self.responder}
        with dialect.render_state(state):
            try:
                message = self.parsed.render(context).strip()
            except dialect.Aborted as abort:
                if state.retried_call_failed:
                    self.retry_aborted = True  # the template's abort came before Braze's retry
                return "aborted", None, abort.reason, None, None
            except LiquidError as error:
                text = dialect.error_text(error, self.translation)
                if isinstance(error, dialect.OutOfTime):
                    who = row.user_id if row.user_id is not None else row.device_id
                    self.out_of_time = (f"not rendered: the message for {who!r} took longer than "
                                        f"{dialect.LIMITS.seconds:g} s, so the preview stopped rendering")
                return "error", None, None, text, None
            except RecursionError:
                return "error", None, None, "the template nests too deeply to render", None
            except Exception as error:  # a filter fed odd data: shown, never raised out
                return "error", None, None, f"{type(error).__name__}: {error}", None
        if state.retried_call_failed:
            return "aborted", None, RETRIES_EXHAUSTED, None, None
        return "rendered", message, None, None, ", ".join(dict.fromkeys(state.unresolved))

    def check_retry(self, rows: Sequence[_Row]) -> None:
        """Warn when a ``:retry`` call that fails would make the template abort (Braze's
        abort takes precedence: no retry). Without a failed row, one profile is rendered
        again as if its call had failed, to find out."""
        if not self.retries or self.parse_error is not None or self.out_of_time is not None:
            return
        if not self.retry_aborted:
            probe = next((row for row in rows if row.profile is not None), None)
            if probe is None:
                return
            self.responder.failing = True
            try:
                self(probe)
            finally:
                self.responder.failing = False
        if self.retry_aborted:
            warn(
                "the template aborts when its Connected Content call fails, and the tag has :retry: Braze "
                "aborts the message instead of retrying it (its abort takes precedence). Abort only on "
                "answers that came back, e.g. with amptools.braze.guard(query, retry=True).",
                RetryAbortWarning)


def sort_for_review(previews: pd.DataFrame) -> pd.DataFrame:
    """Previews with what needs a look first: errors, aborted, then messages with unresolved variables.

    Parameters
    ----------
    previews : DataFrame
        From :func:`preview`.

    Returns
    -------
    pandas.DataFrame
        The same rows and columns (a new frame), stably ordered: ``error``, ``aborted``,
        ``rendered`` with ``unresolved`` variables, ``rendered``.
    """
    from ..metrics import require_columns

    require_columns(previews, ["status", "unresolved"], "sort_for_review")
    unresolved = previews["unresolved"].fillna("").astype(str) != ""
    rank = previews["status"].map({"error": 0, "aborted": 1}).fillna(3).astype(int)
    rank = rank.where(~((previews["status"] == "rendered") & unresolved), 2)
    order = np.argsort(rank.to_numpy(), kind="stable")
    return previews.iloc[order].reset_index(drop=True)


