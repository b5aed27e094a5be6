"""Writing the ``{% connected_content %}`` call for a query, its guard, and reading a tag back.

Package-internal: the public surface is :mod:`amptools.braze`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..client import DEFAULT_BASE_URL, ENDPOINT
from ..query import encode_params
from ..errors import InvalidQueryError
from ..query import ID_TYPES, ProfileQuery

__all__ = [
    "CACHE_MAX_AGE_RANGE",
    "DEFAULT_SAVE",
    "KEY_PLACEHOLDER",
    "UNKNOWN_USER_BODY",
    "URL_END",
    "VARIABLE_NAME",
    "ConnectedContentCall",
    "connected_content",
    "guard",
    "parse_tag",
    "read_url",
    "split_tag",
    "starter_template",
]

#: What stands in the ``Authorization`` header instead of the key: replace it in Braze,
#: or better, store the key as a Braze credential and pass ``credential=``.
KEY_PLACEHOLDER = "Api-Key YOUR-SECRET-KEY"
#: Braze's bounds for ``:cache_max_age`` (5 minutes to 4 hours).
CACHE_MAX_AGE_RANGE = (300, 14_400)
#: Without ``:save`` Braze puts the answer in a variable named ``connected``.
DEFAULT_SAVE = "connected"
#: The Profile API's documented answer for an id it has not seen (its HTTP status is not
#: documented: the sample org answers 400, and :func:`guard` tests the body, not the status).
UNKNOWN_USER_BODY = "User id and device id not seen before"
VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The first connected_content tag of a template: found, and read, in linear time.
_TAG_START = re.compile(r"\{%-?\s*connected_content(?!\w)")
# Where a tag's URL ends: white space before the first ":option". The look-behind makes
# the search linear in a long run of white space.
URL_END = re.compile(r"(?<!\s)\s+:[A-Za-z_]")
_OPTION = re.compile(r"\s*:([A-Za-z_]\w*)")
_VALUE = re.compile(r"\s*(\S+)")
_NOT_SPACE = re.compile(r"\S")
_FLAGS = frozenset({"retry", "no_cache"})
_OPTIONS = frozenset({"headers", "save", "auth_credentials", "basic_auth", "cache_max_age", "method",
                      "body", "content_type", *_FLAGS})
_PARAMS = frozenset({"user_id", "device_id", "get_recs", "rec_id", "rec_type", "get_amp_props",
                     "get_cohort_ids", "get_computations", "comp_id", "get_propensity",
                     "prediction_id", "propensity_type"})


# ---------------------------------------------------------------------------- writing the tag
def _check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not VARIABLE_NAME.match(value):
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
        Add ``:retry``: Braze retries a failed call up to 5 times, then aborts the
        message. A guard that aborts on a failed call stops the retries (Braze's abort
        takes precedence): write it with ``guard(query, retry=True)``; :func:`preview`
        warns (:class:`RetryAbortWarning`) when a template would abort first.

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
           f"&{encode_params(params)}")
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


def guard(query: ProfileQuery, *, save: str = "amplitude", retry: bool = False) -> str:
    """The usual guard after the tag: abort when there is no profile, or a list is empty.

    Parameters
    ----------
    query : ProfileQuery
        The query of the tag; one emptiness check per recommendation id.
    save : str, default "amplitude"
        The tag's ``:save`` variable.
    retry : bool, default False
        Whether the tag has ``:retry`` (``connected_content(..., retry=True)``). Braze
        does not retry a call when the template aborts on the same condition (Braze's
        "Connected Content retries": the abort takes precedence), so the guard then
        aborts only on answers that came back — an unknown user, an empty list — and
        leaves a failed call to Braze, which retries it and aborts after 5 failures.

    Returns
    -------
    str
        Liquid. Without ``retry``: ``abort_message('Profile API call failed')`` when the
        answer holds no ``userData`` — an unknown user (the Profile API's body
        :data:`UNKNOWN_USER_BODY`, whether it comes with a 400 or a 200), a failed,
        throttled or unanswered call. The guard tests the body, not the status: Braze
        adds ``__http_status_code__`` only to a 2XX answer. With ``retry``:
        ``abort_message('unknown user')`` on the unknown-user body only. Then
        ``abort_message('no <rec_id> recommendations')`` for each rec id whose item list
        is missing or empty (with ``retry``, only when a profile came back). The reasons
        reach Braze's Message Activity Log; aborted messages are not sent nor counted.
    """
    _check_name(save, "save")
    lines = []
    checks = []
    for rec_id in query.recs:
        name = f"{_slug(rec_id)}_count"
        checks.append(f'{{% assign {name} = {save}.userData.recommendations | where: "rec_id", '
                      f'{json.dumps(rec_id)} | map: "items" | first | size %}}')
        checks.append(f"{{% if {name} == 0 %}}{{% abort_message('no {rec_id} recommendations') %}}{{% endif %}}")
    if retry:
        lines.append(f"{{% if {save}.error == {json.dumps(UNKNOWN_USER_BODY)} %}}"
                     "{% abort_message('unknown user') %}{% endif %}")
        if checks:
            lines += [f"{{% if {save}.userData != nil %}}", *checks, "{% endif %}"]
    else:
        lines.append(f"{{% if {save}.userData == nil %}}{{% abort_message('Profile API call failed') %}}{{% endif %}}")
        lines += checks
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
        Passed on to :func:`connected_content` (``credential``, ``cache_max_age``,
        ``retry``...); with ``retry=True`` the guard leaves room for Braze's retries.

    Returns
    -------
    str
        Braze Liquid, ready for :func:`preview`.
    """
    lines = [connected_content(query, save=save, **options),
             guard(query, save=save, retry=bool(options.get("retry", False)))]
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


def split_tag(text: str) -> tuple[str, dict[str, Any]]:
    """The URL and the ``:options`` of a tag's text; ValueError says what is wrong."""
    text = text.strip()
    end = URL_END.search(text)
    url = text[: end.start()] if end else text
    if not url or url.startswith(":"):
        raise ValueError("connected_content needs a URL first")
    options: dict[str, Any] = {}
    rest, pos = text[len(url):], 0
    decoder = json.JSONDecoder()
    while _NOT_SPACE.search(rest, pos):
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


def read_url(url: str) -> tuple[dict[str, str], ProfileQuery]:
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
    if not isinstance(template, str):
        raise InvalidQueryError(f"template must be text, got {type(template).__name__}.")
    match = _TAG_START.search(template)
    if match is None:
        raise InvalidQueryError("no {% connected_content %} tag found in the template.")
    end = template.find("%}", match.end())
    if end < 0:
        raise InvalidQueryError("the connected_content tag is malformed: it is never closed with '%}'.")
    text = template[match.end():end]
    try:
        url, options = split_tag(text[:-1] if text.endswith("-") else text)
    except ValueError as error:
        raise InvalidQueryError(f"the connected_content tag is malformed: {error}.") from None
    params, query = read_url(url)
    id_type = next((name for name in ID_TYPES if name in params), None)
    return ConnectedContentCall(url=url, query=query, id_type=id_type,
                                save=str(options.get("save", DEFAULT_SAVE)), options=options)


