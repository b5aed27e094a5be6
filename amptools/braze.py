"""Braze Connected Content: write the call, preview every user's message, plan the load.

A Braze campaign calls the Profile API from its message with Liquid's
``{% connected_content %}`` tag. This module answers three questions before the send:

- :func:`connected_content` writes the exact tag for a :class:`~amptools.query.ProfileQuery`
  (and :func:`guard` the usual abort guard); :func:`parse_tag` reads a tag back.
- :func:`preview` renders a message template for every fetched profile with a real
  Liquid engine (python-liquid) plus Braze's pieces: the ``connected_content`` tag is
  answered from each profile's fetched payload, ``abort_message('...')`` stops a
  message, ``${attribute}`` and ``custom_attribute.${name}`` read an attributes table,
  and ``url_param_escape`` / ``json_escape`` join the standard filters.
- :func:`call_plan` lays out, minute by minute, the Profile API calls a send makes
  against the org's 600-a-minute limit, and :func:`recommended_rate` the Braze rate
  limit that keeps the send under it.

The secret key never appears in a tag: it uses ``:auth_credentials NAME`` (a credential
stored in Braze) or an ``Authorization`` header with a visible placeholder.
"""

from __future__ import annotations

import contextvars
import functools
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit

import numpy as np
import pandas as pd
from liquid import Environment, Undefined
from liquid.ast import Node
from liquid.exceptions import LiquidError, LiquidSyntaxError
from liquid.tag import Tag
from liquid.token import TOKEN_EXPRESSION, TOKEN_TAG, Token

from ._types import ProfilesLike
from .client import DEFAULT_BASE_URL, ENDPOINT, _encode_query
from .errors import InvalidQueryError
from .models import UserProfile
from .query import ID_TYPES, ProfileQuery

__all__ = [
    "CALL_PLAN_COLUMNS",
    "KEY_PLACEHOLDER",
    "PREVIEW_COLUMNS",
    "STATUSES",
    "ConnectedContentCall",
    "call_plan",
    "connected_content",
    "guard",
    "parse_tag",
    "preview",
    "recommended_rate",
    "sort_for_review",
    "starter_template",
]

#: What stands in the ``Authorization`` header instead of the key: replace it in Braze,
#: or better, store the key as a Braze credential and pass ``credential=``.
KEY_PLACEHOLDER = "Api-Key YOUR-SECRET-KEY"
PREVIEW_COLUMNS: tuple[str, ...] = (
    "user_id", "device_id", "status", "message", "abort_reason", "error", "unresolved",
)
_PREVIEW_DTYPES = dict.fromkeys(PREVIEW_COLUMNS, "str")
#: ``status`` of a preview row.
STATUSES = ("rendered", "aborted", "error")
CALL_PLAN_COLUMNS: tuple[str, ...] = (
    "minute", "messages", "renders", "cache_hits", "api_calls", "other_calls", "total_calls",
    "share_of_limit", "throttled", "over_limit", "exposure_events",
)
_CALL_PLAN_DTYPES = {**dict.fromkeys(CALL_PLAN_COLUMNS, "int64"), "share_of_limit": "float64",
                     "throttled": "bool"}
#: Braze's bounds for ``:cache_max_age`` (5 minutes to 4 hours).
CACHE_MAX_AGE_RANGE = (300, 14_400)
#: Without ``:save`` Braze puts the answer in a variable named ``connected``.
DEFAULT_SAVE = "connected"

# ``${name}`` and ``custom_attribute.${name}`` are not Liquid; inside Liquid markup they
# become subscripts of two namespaces a preview fills from the attributes table.
_ATTRIBUTES = "__braze_attributes__"
_CUSTOM = "__braze_custom_attributes__"
_MARKUP = re.compile(r"\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
_CUSTOM_SYNTAX = re.compile(r"custom_attribute\.\$\{\s*([^}]*?)\s*\}")
_ATTRIBUTE_SYNTAX = re.compile(r"\$\{\s*([^}]*?)\s*\}")
_BACK = re.compile(rf'({_ATTRIBUTES}|{_CUSTOM})\["((?:[^"\\]|\\.)*)"\]')
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PATH = re.compile(r"[\w-]+(?:\.[\w-]+|\[[^\]]*\])*")
_TAG_TEXT = re.compile(r"\{%-?\s*connected_content\s+(.*?)\s*-?%\}", re.DOTALL)
_URL_END = re.compile(r"\s+:[A-Za-z_]")
_OPTION = re.compile(r"\s*:([A-Za-z_]\w*)")
_VALUE = re.compile(r"\s*(\S+)")
_FLAGS = frozenset({"retry", "no_cache"})
_OPTIONS = frozenset({"headers", "save", "auth_credentials", "basic_auth", "cache_max_age", "method",
                      "body", "content_type", *_FLAGS})
_PARAMS = frozenset({"user_id", "device_id", "get_recs", "rec_id", "rec_type", "get_amp_props",
                     "get_cohort_ids", "get_computations", "comp_id", "get_propensity",
                     "prediction_id", "propensity_type"})
_RESPONDER = "__amptools_responder__"
#: The Profile API's documented answer for an id it has not seen.
UNKNOWN_USER_BODY = "User id and device id not seen before"


# ---------------------------------------------------------------------------- writing the tag
def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidQueryError(f"{what} must be a Liquid variable name (letters, digits, _), got {value!r}.")
    return value


def connected_content(
    query: ProfileQuery,
    *,
    save: str = "amplitude",
    id_type: str = "user_id",
    credential: str | None = None,
    cache_max_age: int | None = None,
    retry: bool = False,
) -> str:
    """The ``{% connected_content %}`` tag that asks the Profile API for ``query``.

    The URL carries every parameter ``query.to_params()`` gives, encoded exactly as
    :class:`~amptools.client.ProfileClient` encodes them (ids percent-encoded, the
    commas joining ``rec_id``/``comp_id``/``prediction_id`` lists literal), after the
    user's id, ``user_id={{${user_id} | url_param_escape}}``. Braze makes **one** call
    per render, so a query asking for both user properties and computations is sent
    as one request (``get_amp_props=true`` with ``get_computations=true`` or
    ``comp_id=``) and the answer's ``amp_props`` holds both, merged — as amptools' own
    fetches ask by default (see ``ProfileQuery.split_computations``).

    .. warning::
       Every call that asks for recommendations logs a recommendation exposure event
       in Amplitude, and Braze may render (and call for) one message 2–3 times (HTML,
       plain text, AMP), so a send logs more exposures than messages. Plan the send's
       load with :func:`call_plan`.

    Parameters
    ----------
    query : ProfileQuery
        What to ask for; at least one thing.
    save : str, default "amplitude"
        The Liquid variable the answer is saved in (``:save``).
    id_type : {"user_id", "device_id"}
        ``user_id`` sends Braze's external id (``${user_id}``). ``device_id`` sends
        ``${device_id}``: Braze has no such standard attribute, so change it to the
        custom attribute holding the Amplitude device id
        (``custom_attribute.${amplitude_device_id}``).
    credential : str, optional
        The name of a Braze Connected Content credential holding the key
        (``:auth_credentials NAME``). Without it the tag carries an ``Authorization``
        header with the placeholder :data:`KEY_PLACEHOLDER`, never the key.
    cache_max_age : int, optional
        Seconds Braze may reuse an answer (``:cache_max_age``), 300 to 14400; Braze's
        default (5 minutes) when None.
    retry : bool
        Add ``:retry`` (Braze retries failed calls up to 5 times; skipped in previews).

    Returns
    -------
    str
        One line: ``{% connected_content URL ... :save NAME %}``.

    Raises
    ------
    InvalidQueryError
        When nothing is asked for or an option is invalid.
    """
    if not isinstance(query, ProfileQuery):
        raise InvalidQueryError(f"query must be a ProfileQuery, got {type(query).__name__}.")
    params = query.to_params()
    if not params:
        raise InvalidQueryError("the query asks for nothing: add recs, amp_props, cohort_ids, "
                                "computations or predictions.")
    if id_type not in ID_TYPES:
        raise InvalidQueryError(f"id_type must be one of {', '.join(ID_TYPES)}, got {id_type!r}.")
    _check_name(save, "save")
    url = (f"{DEFAULT_BASE_URL}{ENDPOINT}?{id_type}={{{{${{{id_type}}} | url_param_escape}}}}"
           f"&{_encode_query(params)}")
    parts = [f"{{% connected_content {url}"]
    if credential is not None:
        if not isinstance(credential, str) or not credential.strip() or re.search(r"\s", credential):
            raise InvalidQueryError(f"credential must be the name of a Braze credential (no spaces), "
                                    f"got {credential!r}.")
        parts.append(f":auth_credentials {credential}")
    else:
        parts.append(":headers " + json.dumps({"Authorization": KEY_PLACEHOLDER}))
    if cache_max_age is not None:
        low, high = CACHE_MAX_AGE_RANGE
        if isinstance(cache_max_age, bool) or not isinstance(cache_max_age, int) or not low <= cache_max_age <= high:
            raise InvalidQueryError(f"cache_max_age must be whole seconds from {low} to {high} "
                                    f"(5 minutes to 4 hours), got {cache_max_age!r}.")
        parts.append(f":cache_max_age {cache_max_age}")
    if retry:
        parts.append(":retry")
    parts.append(f":save {save} %}}")
    return " ".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "set"


def guard(query: ProfileQuery, *, save: str = "amplitude") -> str:
    """The usual guard after the tag: abort when the call failed or a list is empty.

    Parameters
    ----------
    query : ProfileQuery
        The query of the tag; one emptiness check per recommendation id.
    save : str, default "amplitude"
        The tag's ``:save`` variable.

    Returns
    -------
    str
        Liquid: ``abort_message('Profile API call failed')`` when
        ``__http_status_code__`` is not 200 (an unknown user, a failed or throttled
        call), then ``abort_message('no <rec_id> recommendations')`` for each rec id
        whose item list is missing or empty. The reasons reach Braze's Message
        Activity Log; aborted messages are not sent nor counted.
    """
    _check_name(save, "save")
    lines = [f"{{% if {save}.__http_status_code__ != 200 %}}"
             "{% abort_message('Profile API call failed') %}{% endif %}"]
    for rec_id in query.recs:
        name = f"{_slug(rec_id)}_count"
        lines.append(f'{{% assign {name} = {save}.userData.recommendations | where: "rec_id", '
                     f'{json.dumps(rec_id)} | map: "items" | first | size %}}')
        lines.append(f"{{% if {name} == 0 %}}{{% abort_message('no {rec_id} recommendations') %}}{{% endif %}}")
    return "\n".join(lines)


def starter_template(query: ProfileQuery, *, save: str = "amplitude", **options: Any) -> str:
    """A whole message to start from: the tag, the guard, a greeting and the top picks.

    Parameters
    ----------
    query : ProfileQuery
        What the tag asks for; the body lists the first three items of the first
        recommendation id.
    save : str, default "amplitude"
        The tag's ``:save`` variable.
    **options
        Passed on to :func:`connected_content` (``credential``, ``cache_max_age``...).

    Returns
    -------
    str
        Braze Liquid, ready for :func:`preview`.
    """
    lines = [connected_content(query, save=save, **options), guard(query, save=save)]
    if query.recs:
        lines += [f'{{% assign picks = {save}.userData.recommendations | where: "rec_id", '
                  f'{json.dumps(query.recs[0])} | map: "items" | first %}}',
                  "Hi {{${first_name} | default: 'there'}},",
                  "picked for you: {% for item in picks limit: 3 %}{{ item }}"
                  "{% unless forloop.last %}, {% endunless %}{% endfor %}."]
    else:
        lines += ["Hi {{${first_name} | default: 'there'}},", "we have something for you."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- reading a tag
@dataclass(frozen=True)
class ConnectedContentCall:
    """A ``connected_content`` tag read back.

    Attributes
    ----------
    url : str
        The URL as written (Liquid included).
    query : ProfileQuery
        What the URL's parameters ask for.
    id_type : {"user_id", "device_id"} or None
        Which id the URL sends (None: neither, which the API refuses).
    save : str
        The variable the answer is saved in (``connected`` without ``:save``).
    options : dict
        Every ``:option`` with its value (``True`` for flags, a dict for ``:headers``).
    """

    url: str
    query: ProfileQuery
    id_type: str | None
    save: str
    options: Mapping[str, Any] = field(default_factory=dict)


def _split_tag(text: str) -> tuple[str, dict[str, Any]]:
    """The URL and the ``:options`` of a tag's text; ValueError says what is wrong."""
    text = text.strip()
    end = _URL_END.search(text)
    url = text[: end.start()] if end else text
    if not url or url.startswith(":"):
        raise ValueError("connected_content needs a URL first")
    options: dict[str, Any] = {}
    rest, pos = text[len(url):], 0
    decoder = json.JSONDecoder()
    while rest[pos:].strip():
        match = _OPTION.match(rest, pos)
        if match is None:
            raise ValueError(f"expected an option like ':save NAME', found {rest[pos:].strip()[:30]!r}")
        name, pos = match.group(1), match.end()
        if name not in _OPTIONS:
            raise ValueError(f"unknown option ':{name}'; Braze knows :{', :'.join(sorted(_OPTIONS))}")
        if name in _FLAGS:
            options[name] = True
            continue
        while pos < len(rest) and rest[pos].isspace():
            pos += 1
        if rest[pos:pos + 1] == "{":
            try:
                options[name], pos = decoder.raw_decode(rest, pos)
            except ValueError:
                raise ValueError(f":{name} must be a JSON object") from None
            continue
        value = _VALUE.match(rest, pos)
        if value is None or value.group(1).startswith(":"):
            raise ValueError(f":{name} needs a value")
        options[name], pos = value.group(1), value.end()
    return url, options


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(part for part in (value or "").split(",") if part)


def _query_from_params(params: Mapping[str, str]) -> ProfileQuery:
    """The ProfileQuery a Profile API query string asks for (ids left out)."""
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise InvalidQueryError(f"the URL has parameter(s) the Profile API does not know: {', '.join(unknown)}.")

    def flag(name: str) -> bool:
        return params.get(name, "").lower() == "true"

    if params.get("rec_id") and not flag("get_recs"):
        raise InvalidQueryError("the URL has rec_id but not get_recs=true: the API returns no recommendations.")
    comp_ids = _list(params.get("comp_id"))
    return ProfileQuery(
        recs=_list(params.get("rec_id")) if flag("get_recs") else (),
        rec_type=params.get("rec_type") or None,
        amp_props=flag("get_amp_props"),
        cohort_ids=flag("get_cohort_ids"),
        computations=True if flag("get_computations") else (comp_ids or False),
        predictions=_list(params.get("prediction_id")) if flag("get_propensity") else (),
        propensity_type=params.get("propensity_type") or "score",
    )


def _read_url(url: str) -> tuple[dict[str, str], ProfileQuery]:
    parts = urlsplit(url)
    if not parts.path.rstrip("/").endswith(ENDPOINT):
        raise InvalidQueryError(f"the connected_content URL does not call the Profile API ({ENDPOINT}).")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    return params, _query_from_params(params)


def parse_tag(template: str) -> ConnectedContentCall:
    """Read the first ``{% connected_content %}`` tag of a template.

    Parameters
    ----------
    template : str
        A Braze message, or just the tag.

    Returns
    -------
    ConnectedContentCall
        ``parse_tag(connected_content(q)).query == q`` for any query ``q``.

    Raises
    ------
    InvalidQueryError
        When there is no tag, it is malformed, or its URL is not a Profile API call.
    """
    match = _TAG_TEXT.search(template)
    if match is None:
        raise InvalidQueryError("no {% connected_content %} tag found in the template.")
    try:
        url, options = _split_tag(match.group(1))
    except ValueError as error:
        raise InvalidQueryError(f"the connected_content tag is malformed: {error}.") from None
    params, query = _read_url(url)
    id_type = next((name for name in ID_TYPES if name in params), None)
    return ConnectedContentCall(url=url, query=query, id_type=id_type,
                                save=str(options.get("save", DEFAULT_SAVE)), options=options)


# ---------------------------------------------------------------------------- the Liquid environment
class _Aborted(Exception):
    """``abort_message`` ran: the message is not sent (not a LiquidError, so it ends the render)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Problem(LiquidError):
    """The template asks for something the preview cannot answer (carries the tag's line)."""


_UNRESOLVED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("amptools_unresolved",
                                                                               default=None)


def _braze_name(path: str) -> str:
    """A path as the marketer wrote it: ``${first_name}``, ``custom_attribute.${tier}``."""
    def back(match: re.Match[str]) -> str:
        name = json.loads(f'"{match.group(2)}"')
        return f"${{{name}}}" if match.group(1) == _ATTRIBUTES else f"custom_attribute.${{{name}}}"

    return _BACK.sub(back, path)


class _RecordingUndefined(Undefined):
    """Renders empty like Liquid's own, and notes the variable it stood for."""

    __slots__ = ()

    def __str__(self) -> str:
        seen = _UNRESOLVED.get()
        if seen is not None:
            name = self.name
            token = self.token
            if token is not None and token.start_index >= 0:
                match = _PATH.match(token.source, token.start_index)
                if match:
                    name = match.group()
            seen.append(_braze_name(name))
        return ""


def _line(token: Token | None) -> int | None:
    if token is None or token.start_index < 0:
        return None
    return token.source.count("\n", 0, token.start_index) + 1


class _ConnectedContentNode(Node):
    __slots__ = ("url", "save", "options")

    def __init__(self, token: Token, url: Any, save: str, options: dict[str, Any]) -> None:
        super().__init__(token)
        self.url = url
        self.save = save
        self.options = options
        self.blank = True

    def __str__(self) -> str:
        return "{% connected_content ... %}"

    def render_to_output(self, context: Any, buffer: Any) -> int:
        url = io.StringIO()
        try:
            # The URL's nodes render straight into the message's context: a URL has no
            # tags of its own to scope, and a context of its own per user costs time.
            for node in self.url.nodes:
                node.render(context, url)
        except LiquidError as error:
            raise _Problem(f"in the connected_content URL: {error.message}", token=self.token) from None
        responder = context.globals.get(_RESPONDER)
        if responder is None:
            raise _Problem("connected_content is answered only in amptools.braze.preview()", token=self.token)
        try:
            answer = responder.answer(url.getvalue())
        except InvalidQueryError as error:
            raise _Problem(str(error), token=self.token) from None
        if answer is not None:
            context.assign(self.save, answer)
        return 0


class _ConnectedContentTag(Tag):
    name = "connected_content"
    block = False

    def parse(self, stream: Any) -> Node:
        token = stream.eat(TOKEN_TAG)
        if stream.current.kind != TOKEN_EXPRESSION:
            raise LiquidSyntaxError("connected_content needs a URL", token=token)
        try:
            url, options = _split_tag(stream.current.value)
        except ValueError as error:
            raise LiquidSyntaxError(f"connected_content: {error}", token=token) from None
        save = str(options.get("save", DEFAULT_SAVE))
        if not _NAME.match(save):
            raise LiquidSyntaxError(f"connected_content: :save {save!r} is not a variable name", token=token)
        try:
            url_template = self.env.from_string(url)
        except LiquidError as error:
            raise LiquidSyntaxError(f"in the connected_content URL: {error.message}", token=token) from None
        return _ConnectedContentNode(token, url_template, save, options)


_ABORT_ARGUMENT = re.compile(r"""^\(\s*(?:'([^']*)'|"([^"]*)")?\s*\)$""")


class _AbortNode(Node):
    __slots__ = ("reason",)

    def __init__(self, token: Token, reason: str) -> None:
        super().__init__(token)
        self.reason = reason
        self.blank = True

    def __str__(self) -> str:
        return f"{{% abort_message({self.reason!r}) %}}"

    def render_to_output(self, context: Any, buffer: Any) -> int:
        raise _Aborted(self.reason)


class _AbortTag(Tag):
    name = "abort_message"
    block = False

    def parse(self, stream: Any) -> Node:
        token = stream.eat(TOKEN_TAG)
        reason = ""
        if stream.current.kind == TOKEN_EXPRESSION:
            match = _ABORT_ARGUMENT.match(stream.current.value.strip())
            if match is None:
                raise LiquidSyntaxError("abort_message takes one quoted reason without Liquid: "
                                        "abort_message('why')", token=token)
            reason = match.group(1) if match.group(1) is not None else (match.group(2) or "")
        return _AbortNode(token, reason)


def _url_param_escape(value: Any) -> str:
    # The same encoding the client uses for a single id: every reserved character escaped.
    return quote(str(value) if value is not None else "", safe="")


def _json_escape(value: Any) -> str:
    return json.dumps(str(value) if value is not None else "", ensure_ascii=False)[1:-1]


@functools.lru_cache(maxsize=1)
def _environment() -> Environment:
    env = Environment(undefined=_RecordingUndefined)
    env.add_tag(_ConnectedContentTag)
    env.add_tag(_AbortTag)
    env.add_filter("url_param_escape", _url_param_escape)
    env.add_filter("json_escape", _json_escape)
    return env


def _translate(template: str) -> str:
    """Braze's ``${name}`` and ``custom_attribute.${name}`` as Liquid subscripts (markup only)."""
    def inside(match: re.Match[str]) -> str:
        text = _CUSTOM_SYNTAX.sub(
            lambda m: f"{_CUSTOM}[{json.dumps(m.group(1), ensure_ascii=False)}]", match.group())
        return _ATTRIBUTE_SYNTAX.sub(
            lambda m: f"{_ATTRIBUTES}[{json.dumps(m.group(1), ensure_ascii=False)}]", text)

    return _MARKUP.sub(inside, template)


def _error_text(error: LiquidError, source: str) -> str:
    message = str(error.message) if error.message is not None else type(error).__name__
    line = _line(error.token)
    if line is None:  # found at the end of the template (an unclosed block)
        return f"line {source.count(chr(10)) + 1} (end of the template): {message}"
    return f"line {line}: {message}"


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
    """Answers the template's connected_content calls for one row at a time."""

    def __init__(self, fetched: ProfileQuery) -> None:
        self.fetched = fetched
        self.row: _Row | None = None
        self._asked: dict[tuple[str, str], ProfileQuery] = {}

    def answer(self, url: str) -> dict[str, Any] | None:
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
            _, asked = _read_url(f"{base}?{key[1]}")
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
            return {"error": "user_id or device_id is required", "__http_status_code__": 400}
        for name, value in ids.items():
            own = getattr(row, name)
            if own is not None and value != own:
                raise InvalidQueryError(f"the URL asks for {name} {value!r} but this row is {own!r}: "
                                        f"use {{{{${{{name}}} | url_param_escape}}}} in the URL.")
        if row.profile is None:
            if row.http_status is None:
                return None  # no answer at all (timeout, reset): the variable stays unset
            # An unknown user gets the API's documented body, not amptools' explanation of it.
            error = UNKNOWN_USER_BODY if row.not_found else (row.error or "request failed")
            return {"error": error, "__http_status_code__": row.http_status}
        return {**_body(row.profile, asked), "__http_status_code__": 200}


def _rows(profiles: Any) -> tuple[list[_Row], ProfileQuery]:
    from .bulk import ProfileSet

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

    The template is parsed once with python-liquid (a real Liquid engine) and rendered
    for each user. Braze's pieces are added: ``{% connected_content URL ... %}`` is
    answered from the user's fetched profile (the body one call with the URL's
    parameters would have returned, with ``__http_status_code__`` 200); a user the API
    did not know (``not_found``) answers with its HTTP status (400) and the API's
    ``error``, and a failed fetch with its status (or no answer at all), so the
    template's guard runs as it would in Braze. ``{% abort_message('why') %}`` stops
    the message; ``${name}`` and ``custom_attribute.${name}`` read ``attributes``
    (``${user_id}`` and ``${device_id}`` are the profile's own); ``url_param_escape``,
    ``json_escape`` and the standard Liquid filters are available. ``:retry`` and
    ``:cache_max_age`` change nothing in a preview.

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
        (missing where not applicable): ``user_id``, ``device_id``; ``status``:
        ``rendered``, ``aborted`` or ``error``; ``message``: the rendered text with
        surrounding white space trimmed (rendered only); ``abort_reason``: the text of
        ``abort_message`` (aborted only); ``error``: what went wrong, with the template
        line (``line 3: ...``), including a call that asks for what the profiles were
        not fetched with; ``unresolved``: the variables that rendered empty, comma
        separated (``${first_name}, amplitude.userData.recommendations[0].items[0]``).

    Raises
    ------
    InvalidQueryError
        Only for bad arguments (profiles or attributes of the wrong kind); problems of
        the template are rows with ``status="error"``.
    """
    if not isinstance(template, str):
        raise InvalidQueryError(f"template must be text, got {type(template).__name__}.")
    rows, fetched = _rows(profiles)
    if query is not None:
        fetched = query
    lookup = _attribute_lookup(attributes)
    out: dict[str, list[Any]] = {name: [] for name in PREVIEW_COLUMNS}
    env = _environment()
    parse_error: str | None = None
    try:
        parsed = env.from_string(_translate(template))
    except LiquidError as error:
        parse_error = _error_text(error, template)
    responder = _Responder(fetched)
    seen: list[str] = []
    token = _UNRESOLVED.set(seen)
    try:
        for row in rows:
            out["user_id"].append(row.user_id)
            out["device_id"].append(row.device_id)
            message = reason = error_text = None
            if parse_error is not None:
                status, error_text = "error", parse_error
            else:
                responder.row = row
                seen.clear()
                values = lookup.get(row.user_id, {}) if row.user_id is not None else {}
                names = {**values, "user_id": row.user_id, "device_id": row.device_id}
                names = {k: v for k, v in names.items() if v is not None}
                try:
                    message = parsed.render({_ATTRIBUTES: names, _CUSTOM: names, _RESPONDER: responder}).strip()
                    status = "rendered"
                except _Aborted as abort:
                    status, reason = "aborted", abort.reason
                except LiquidError as error:
                    status, error_text = "error", _error_text(error, template)
                except Exception as error:  # a filter fed odd data: shown, never raised out
                    status, error_text = "error", f"{type(error).__name__}: {error}"
            out["status"].append(status)
            out["message"].append(message)
            out["abort_reason"].append(reason)
            out["error"].append(error_text)
            out["unresolved"].append(", ".join(dict.fromkeys(seen)) if status == "rendered" else None)
    finally:
        _UNRESOLVED.reset(token)
    return pd.DataFrame(out, columns=list(PREVIEW_COLUMNS)).astype(_PREVIEW_DTYPES)


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
    from .metrics import require_columns

    require_columns(previews, ["status", "unresolved"], "sort_for_review")
    unresolved = previews["unresolved"].fillna("").astype(str) != ""
    rank = previews["status"].map({"error": 0, "aborted": 1}).fillna(3).astype(int)
    rank = rank.where(~((previews["status"] == "rendered") & unresolved), 2)
    order = np.argsort(rank.to_numpy(), kind="stable")
    return previews.iloc[order].reset_index(drop=True)


# ---------------------------------------------------------------------------- planning the send
def _positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidQueryError(f"{name} must be a whole number ≥ {minimum}, got {value!r}.")
    return int(value)


def recommended_rate(*, renders_per_message: int = 2, other_calls_per_minute: int = 0, limit: int = 600) -> int:
    """The Braze rate limit (messages a minute) that keeps a send under the org limit.

    It assumes no cache hit (the worst case: every user distinct): each message's
    ``renders_per_message`` calls, plus the org's other calls, must fit in ``limit``.

    Parameters
    ----------
    renders_per_message : int, default 2
        Calls one message makes (Braze renders HTML, plain text, AMP: 2–3).
    other_calls_per_minute : int, default 0
        Calls other tools make meanwhile (amptools bulk fetches, other campaigns).
    limit : int, default 600
        The org's Profile API requests a minute.

    Returns
    -------
    int
        ``(limit - other_calls_per_minute) // renders_per_message``; 0 when the other
        calls alone use the limit up (no rate is safe).
    """
    renders = _positive_int(renders_per_message, "renders_per_message")
    other = _positive_int(other_calls_per_minute, "other_calls_per_minute", minimum=0)
    limit = _positive_int(limit, "limit")
    return max(0, (limit - other) // renders)


def call_plan(
    audience: int | Sequence[str],
    *,
    send_rate_per_minute: int,
    renders_per_message: int = 2,
    cache_max_age: int | None = 300,
    other_calls_per_minute: int = 0,
    limit: int = 600,
) -> pd.DataFrame:
    """Minute by minute, the Profile API calls a Braze send makes against the org limit.

    Messages go out evenly at ``send_rate_per_minute`` (Braze's rate limit for the
    campaign); message ``k`` leaves at second ``60 * k / send_rate_per_minute``. Each
    message renders ``renders_per_message`` times and, conservatively, every render
    calls (Braze documents 2–3 calls per message and a best-effort cache). A user who
    comes again within ``cache_max_age`` seconds of their last call is served from
    Braze's cache: all their renders are cache hits and reach neither the API nor
    the exposure log. Every call is assumed to ask for recommendations, so each logs
    an exposure event.

    Parameters
    ----------
    audience : int or sequence of str
        The number of (distinct) users, or the user ids in send order (repeats can be
        cache hits).
    send_rate_per_minute : int
        Messages a minute.
    renders_per_message : int, default 2
        Calls one message makes.
    cache_max_age : int or None, default 300
        Seconds an answer is reused (Braze's default is 300); None or 0: no cache.
    other_calls_per_minute : int, default 0
        Calls to the org's Profile API quota from elsewhere, every minute of the send.
    limit : int, default 600
        The org's requests a minute.

    Returns
    -------
    pandas.DataFrame
        One row per minute of the send, columns :data:`CALL_PLAN_COLUMNS`:
        ``minute`` (int64, from 0), ``messages`` (sent that minute), ``renders``
        (``messages * renders_per_message``), ``cache_hits`` (renders served from
        Braze's cache), ``api_calls`` (``renders - cache_hits``), ``other_calls``,
        ``total_calls`` (``api_calls + other_calls``), ``share_of_limit``
        (float64, ``total_calls / limit``), ``throttled`` (bool, ``total_calls >
        limit``: the API answers 429 and live messages lose their recommendations),
        ``over_limit`` (calls beyond the limit), ``exposure_events`` (= ``api_calls``).
        ``df.attrs`` holds ``recommended_rate`` (see :func:`recommended_rate`),
        ``limit``, ``send_rate_per_minute`` and ``throttled_minutes``.
    """
    rate = _positive_int(send_rate_per_minute, "send_rate_per_minute")
    renders = _positive_int(renders_per_message, "renders_per_message")
    other = _positive_int(other_calls_per_minute, "other_calls_per_minute", minimum=0)
    limit = _positive_int(limit, "limit")
    if cache_max_age is not None:
        cache_max_age = _positive_int(cache_max_age, "cache_max_age", minimum=0)
    if isinstance(audience, (int, np.integer)) and not isinstance(audience, bool):
        size = _positive_int(audience, "audience", minimum=0)
        hits_per_message = np.zeros(size, dtype=np.int64)
    elif isinstance(audience, Iterable) and not isinstance(audience, (str, bytes, Mapping)):
        ids = list(audience)
        size = len(ids)
        hits_per_message = np.zeros(size, dtype=np.int64)
        if cache_max_age:
            last_call: dict[Any, float] = {}
            for k, user in enumerate(ids):
                when = 60.0 * k / rate
                called = last_call.get(user)
                if called is not None and when - called <= cache_max_age:
                    hits_per_message[k] = renders
                else:
                    last_call[user] = when
    else:
        raise InvalidQueryError(f"audience must be a number of users or a list of user ids, "
                                f"got {type(audience).__name__}.")
    minutes = np.arange(size, dtype=np.int64) // rate
    n_minutes = int(minutes[-1]) + 1 if size else 0
    messages = np.bincount(minutes, minlength=n_minutes).astype(np.int64)
    hits = np.bincount(minutes, weights=hits_per_message, minlength=n_minutes).astype(np.int64)
    rendered = messages * renders
    api_calls = rendered - hits
    total = api_calls + other
    frame = pd.DataFrame({
        "minute": np.arange(n_minutes, dtype=np.int64), "messages": messages, "renders": rendered,
        "cache_hits": hits, "api_calls": api_calls, "other_calls": np.full(n_minutes, other, dtype=np.int64),
        "total_calls": total, "share_of_limit": total / limit, "throttled": total > limit,
        "over_limit": np.maximum(total - limit, 0), "exposure_events": api_calls,
    }, columns=list(CALL_PLAN_COLUMNS)).astype(_CALL_PLAN_DTYPES)
    frame.attrs.update(
        recommended_rate=recommended_rate(renders_per_message=renders, other_calls_per_minute=other, limit=limit),
        limit=limit, send_rate_per_minute=rate, throttled_minutes=int(frame["throttled"].sum()),
    )
    return frame
