"""Braze's user import files: a CSV for the dashboard's import, JSON Lines for ``/users/track``.

Both writers check the table against Braze's import rules first and refuse it, with
every problem at once, in one :class:`~amptools.errors.BrazeImportError`. The user
guide is ``docs/export.md``.
"""

from __future__ import annotations

import functools
import json
import math
import re
import zoneinfo
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._types import PathLike
from ..errors import AmptoolsWarning, BrazeImportError, warn, whole_number
from ..files import PRIVATE_MODE, encoded_size, is_private, staged_files, write_atomic

__all__ = [
    "BRAZE_CSV_ATTRIBUTES",
    "BRAZE_DEFAULT_ATTRIBUTES",
    "BRAZE_ID_TYPES",
    "BRAZE_MAX_BATCH",
    "BRAZE_MAX_BYTES",
    "BRAZE_RESERVED_NAMES",
    "BrazeFormatWarning",
    "to_braze_csv",
    "to_braze_json",
]


#: Braze's default user attributes (its "user profile fields"). A header must match one
#: exactly, case included; ``Email`` would silently become a custom attribute.
BRAZE_DEFAULT_ATTRIBUTES = frozenset({
    "first_name", "last_name", "email", "phone", "gender", "dob", "country", "home_city",
    "language", "time_zone", "email_subscribe", "push_subscribe", "email_open_tracking_disabled",
    "email_click_tracking_disabled", "date_of_first_session", "date_of_last_session", "image_url",
    "marked_email_as_spam_at", "current_location", "facebook", "twitter", "push_tokens",
    "subscription_group_id", "subscription_state", "attributed_campaign", "attributed_source",
    "attributed_adgroup", "attributed_ad",
})
#: The default attributes Braze's CSV import takes. The others are objects or lists
#: (``push_tokens``, ``current_location``, ``facebook``, ``twitter``), which only
#: ``/users/track`` takes (Braze's "User import": push tokens and arrays cannot be
#: imported by CSV): use :func:`to_braze_json` for them.
BRAZE_CSV_ATTRIBUTES = BRAZE_DEFAULT_ATTRIBUTES - {"push_tokens", "current_location", "facebook", "twitter"}


class BrazeFormatWarning(AmptoolsWarning):
    """A default attribute in a format Braze advises against (``phone`` not in E.164,
    ``time_zone`` not an IANA name): Braze imports it, but may not use it as intended."""

# Default attributes whose text Braze reads in one format only (a country *name* in
# ``country`` would be misread): the format, and how to say it.
_SUBSCRIPTION = (re.compile(r"^(?:opted_in|unsubscribed|subscribed)$"), "opted_in, unsubscribed or subscribed")
_BRAZE_FORMATS = {
    "country": (re.compile(r"^[A-Za-z]{2}$"), "ISO 3166-1 alpha-2 codes such as 'GB'"),
    "language": (re.compile(r"^[A-Za-z]{2}(?:[-_][A-Za-z0-9]{2,4})?$"), "ISO 639-1 codes such as 'en'"),
    "dob": (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "dates written YYYY-MM-DD"),
    "email_subscribe": _SUBSCRIPTION,
    "push_subscribe": _SUBSCRIPTION,
    "gender": (re.compile(r"^[MFONPU]$"), "M, F, O (other), N (not applicable), P (prefer not to say) or U "
                                          "(unknown)"),
}
# Default attributes whose format Braze advises (a warning, not a refusal).
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# Characters Braze's CSV import cannot take inside a value: a double quotation mark
# ("isn't valid and will make the row malformed": Braze's user import troubleshooting),
# line breaks (a reader that splits lines first, as Braze's troubleshooting about
# inconsistent line breaks suggests, cuts the row) and other control characters (NUL, ESC).
_CSV_QUOTE = '"'
_CSV_BREAKS = re.compile(r"\r\n|[\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_CSV_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]")
_CSV_UNSAFE = re.compile(r'["\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00-\x08\x0e-\x1b\x1f\x7f-\x9f]')
#: Names Braze reserves for user ids and import flags: never a data column.
BRAZE_RESERVED_NAMES = frozenset({
    "external_id", "braze_id", "user_alias", "user_alias_name", "user_alias_label", "alias_name",
    "alias_label", "_update_existing_only", "push_token_import",
})
#: How Braze can identify the users of a file (``id_type=``).
BRAZE_ID_TYPES = ("external_id", "braze_id", "user_alias")
#: Braze's size limit of one attributes CSV file.
BRAZE_MAX_BYTES = 500 * 2**20
#: Braze's limit of attribute objects in one ``/users/track`` request.
BRAZE_MAX_BATCH = 75

_BOOLEAN, _NUMBER, _DATETIME, _STRING, _LIST, _OBJECT, _BYTES = (
    "boolean", "number", "datetime", "string", "list", "object", "bytes")
# Text Braze might read as a number, boolean or date unless it is quoted. Generous on
# purpose: quoting text that would have stayed text anyway costs nothing.
_BRAZE_COULD_BE_TYPED = re.compile(r"^(?:[\d+\-.]|(?:true|false|null|nan|inf|infinity)$)", re.IGNORECASE)
_BRAZE_NEEDS_QUOTES = re.compile(r'[,"\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]|^\s|\s$')
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _kind(value: Any) -> str | None:
    """The Braze type of one value, or None when it is missing."""
    if _is_missing(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return _BOOLEAN
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _NUMBER
    if isinstance(value, (datetime, date, np.datetime64)):
        return _DATETIME
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return _LIST
    if isinstance(value, dict):
        return _OBJECT
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _BYTES
    return _STRING


def _column_kinds(series: pd.Series) -> list[str | None]:
    dtype = series.dtype
    missing = series.isna().to_numpy() if not _holds_objects(dtype) else None
    if missing is not None:
        if pd.api.types.is_bool_dtype(dtype):
            kind = _BOOLEAN
        elif isinstance(dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(dtype):
            kind = _DATETIME
        elif pd.api.types.is_numeric_dtype(dtype):
            kind = _NUMBER
        else:
            kind = _STRING
        return [None if m else kind for m in missing]
    return [_kind(v) for v in series.tolist()]


def _holds_objects(dtype: Any) -> bool:
    # Object and categorical columns may hold anything; typed columns hold one kind.
    return dtype == object or isinstance(dtype, pd.CategoricalDtype)


def _braze_datetime(value: Any) -> str:
    """ISO 8601 in UTC with ``Z``; a date alone as ``YYYY-MM-DD``; naive times taken as UTC."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{stamp.microsecond:06d}Z" if stamp.microsecond else f"{text}Z"


def _braze_number(value: Any) -> int | float:
    if isinstance(value, (int, np.integer)):
        return int(value)
    return float(value)


def _braze_csv_cell(value: Any, kind: str | None) -> str:
    if kind is None:
        return ""  # Braze leaves the user's value alone
    if kind == _BOOLEAN:
        return "true" if value else "false"
    if kind == _NUMBER:
        number = _braze_number(value)
        # Positional, never 1e+20: Braze reads digits with a "." and nothing else.
        return str(number) if isinstance(number, int) else np.format_float_positional(number, trim="-")
    if kind == _DATETIME:
        return _braze_datetime(value)
    return _quote_if_needed(value if isinstance(value, str) else str(value), typed=True)


def _quote_if_needed(text: str, *, typed: bool) -> str:
    """RFC 4180 quoting when the text needs it, or (``typed``) when Braze might not read it as text."""
    if not text or _BRAZE_NEEDS_QUOTES.search(text) or (typed and _BRAZE_COULD_BE_TYPED.match(text)):
        return '"' + text.replace('"', '""') + '"'
    return text


def _braze_json_value(value: Any, kind: str | None) -> Any:
    if kind == _BOOLEAN:
        return bool(value)
    if kind == _NUMBER:
        return _braze_number(value)
    if kind == _DATETIME:
        return _braze_datetime(value)
    if kind == _LIST:
        return [_braze_json_value(v, _kind(v)) for v in value if not _is_missing(v)]
    if kind == _OBJECT:
        return {str(k): _braze_json_value(v, _kind(v)) for k, v in value.items() if not _is_missing(v)}
    return value if isinstance(value, str) else str(value)


def _examples(items: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def clean_csv_text(text: str) -> str:
    """``text`` as Braze's CSV import can take it: ``"`` becomes ``'``, each line break a
    space, other control characters (NUL, ESC ...) are dropped."""
    return _CSV_CONTROLS.sub("", _CSV_BREAKS.sub(" ", text)).replace(_CSV_QUOTE, "'")


def _nested_problems(value: Any) -> set[str]:
    """What in a list or dict Braze cannot store: ``"infinite numbers"``, ``"bytes"``."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset, np.ndarray)):
            stack.extend(item)
        elif isinstance(item, (float, np.floating)) and not math.isnan(item) and not math.isfinite(item):
            found.add("infinite numbers")
        elif isinstance(item, (bytes, bytearray, memoryview)):
            found.add("bytes")
    return found


@functools.lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class _BrazeTable:
    """A table checked against Braze's import rules: ids, data columns and each value's kind.

    ``for_csv``: the rules of the CSV import (no lists or objects, no ``"``, line break or
    control character in a value unless ``clean_text`` replaces them). Problems are
    collected and raised at once; advice (``phone``, ``time_zone``) is kept in
    :attr:`advice` for a warning once the file is written.
    """

    def __init__(self, table: pd.DataFrame, *, external_id: str, id_type: str, alias_label: str | None,
                 for_csv: bool, clean_text: bool = False) -> None:
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(table).__name__}")
        if id_type not in BRAZE_ID_TYPES:
            raise ValueError(f"id_type must be one of {', '.join(BRAZE_ID_TYPES)}, got {id_type!r}")
        if id_type == "user_alias" and not (isinstance(alias_label, str) and alias_label.strip()):
            raise ValueError('id_type="user_alias" needs alias_label=..., the label that groups the aliases')
        self.id_type = id_type
        self.alias_label = alias_label
        self.for_csv = for_csv
        self.clean_text = clean_text
        self.advice: list[str] = []
        problems: list[str] = []
        names = [str(name) for name in table.columns]
        self.ids: list[str] = []
        if external_id not in names:
            problems.append(f"no column {external_id!r} to take the ids from (columns: {', '.join(names)}); "
                            "name the id column with external_id=...")
        else:
            self.ids = self._check_ids(table.iloc[:, names.index(external_id)], external_id, problems)
        if for_csv and id_type == "user_alias" and alias_label is not None and _CSV_UNSAFE.search(alias_label):
            problems.append(f"alias_label {alias_label!r} holds a double quotation mark, a line break or a "
                            "control character, which Braze's CSV import cannot take")
        self.positions = [i for i, name in enumerate(names) if name != external_id]
        self.names = [names[i] for i in self.positions]
        self._check_names(problems)
        self.kinds: list[list[str | None]] = []
        for position, name in zip(self.positions, self.names):
            series = table.iloc[:, position]
            kinds = _column_kinds(series)
            self.kinds.append(kinds)
            self._check_values(name, series, kinds, problems)
        if problems:
            error = BrazeImportError(
                f"this table is not ready for Braze's user import ({len(problems)} "
                f"problem{'s' if len(problems) > 1 else ''}); nothing was written:\n"
                + "\n".join(f"  - {p}" for p in problems))
            error.problems = tuple(problems)
            raise error
        self.table = table

    def _check_ids(self, series: pd.Series, name: str, problems: list[str]) -> list[str]:
        ids: list[str] = []
        empty: list[int] = []
        odd: list[str] = []
        unsafe: list[str] = []
        for row, value in enumerate(series.tolist(), start=1):
            if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
                value = str(int(value))
            if _is_missing(value) or (isinstance(value, str) and not value.strip()):
                empty.append(row)
                value = ""
            elif not isinstance(value, str):
                odd.append(f"row {row}: {value!r}")
                value = str(value)
            elif _SURROGATE.search(value):
                odd.append(f"row {row}: {value!r} (holds text that cannot be encoded)")
            elif self.for_csv and _CSV_UNSAFE.search(value):
                unsafe.append(f"row {row}: {value!r}")
            ids.append(value)
        if empty:
            problems.append(f"{len(empty)} row(s) have no id in {name!r} (rows {_examples(empty)}): "
                            "Braze skips them; drop them or take the ids from another column")
        if odd:
            problems.append(f"ids in {name!r} must be text: {_examples(odd)}")
        if unsafe:
            problems.append(f"ids in {name!r} hold a double quotation mark, a line break or a control character, "
                            f"which Braze's CSV import cannot take (the row would be malformed): {_examples(unsafe)}; "
                            "an id is never changed, so import these users with to_braze_json(...)")
        counts = pd.Series(ids, dtype=object).value_counts()
        repeated = [f"{i!r} ({n}x)" for i, n in counts[counts > 1].items() if i != ""]
        if repeated:
            problems.append(f"{len(repeated)} id(s) appear more than once in {name!r}: {_examples(repeated)}; "
                            "Braze imports one row per user")
        return ids

    def _check_names(self, problems: list[str]) -> None:
        defaults = {name.lower(): name for name in BRAZE_DEFAULT_ATTRIBUTES}
        reserved = [n for n in self.names if n in BRAZE_RESERVED_NAMES]
        if reserved:
            problems.append(f"column(s) {', '.join(map(repr, reserved))} use names Braze reserves for ids and "
                            "import flags; rename them")
        near = [f"{n!r} (Braze's is {defaults[n.lower()]!r})" for n in self.names
                if n not in BRAZE_DEFAULT_ATTRIBUTES and n.lower() in defaults]
        if near:
            problems.append(f"column(s) {', '.join(near)} differ from a Braze default attribute only by case, "
                            "so Braze would make a custom attribute of them; use the exact name, or another")
        if self.for_csv:
            not_csv = [repr(n) for n in self.names if n in BRAZE_DEFAULT_ATTRIBUTES and n not in BRAZE_CSV_ATTRIBUTES]
            if not_csv:
                problems.append(f"column(s) {', '.join(not_csv)} are Braze default attributes its CSV import does "
                                "not take (objects or lists): write to_braze_json(...) for /users/track instead")
            unsafe = [repr(n) for n in self.names if _CSV_UNSAFE.search(n)]
            if unsafe:
                problems.append(f"column name(s) {', '.join(unsafe)} hold a double quotation mark, a line break or "
                                "a control character, which Braze's CSV import cannot take; rename them")
        counts = pd.Series(self.names, dtype=object).value_counts()
        twice = [repr(n) for n, k in counts[counts > 1].items()]
        if twice:
            problems.append(f"column name(s) {', '.join(twice)} appear more than once")
        if any(not n.strip() for n in self.names):
            problems.append("a column has an empty name")

    def _check_values(self, name: str, series: pd.Series, kinds: list[str | None], problems: list[str]) -> None:
        present = {k for k in kinds if k is not None}
        first = {k: kinds.index(k) for k in present}
        values = series.tolist()
        if _BYTES in present:
            rows = [row + 1 for row, k in enumerate(kinds) if k == _BYTES]
            problems.append(f"column {name!r} holds bytes (rows {_examples(rows)}), not text: decode them first "
                            "(e.g. .str.decode('utf-8'))")
            present.discard(_BYTES)
        if len(present) > 1:
            seen = ", ".join(f"{k} (row {first[k] + 1}: {series.iloc[first[k]]!r})" for k in sorted(present))
            problems.append(f"column {name!r} mixes types: {seen}; Braze needs one type per column, "
                            "so convert it first (e.g. .astype(str))")
        if _LIST in present and self.for_csv:
            problems.append(f"column {name!r} holds lists, which Braze's CSV import does not take: write "
                            "to_braze_json(...) for the /users/track API, or marketing_table(..., "
                            "items_as=\"columns\") for rec_1..rec_N")
        if _OBJECT in present and self.for_csv:
            problems.append(f"column {name!r} holds objects (dicts), which Braze's CSV import does not take: "
                            "write to_braze_json(...) instead")
        if present & {_LIST, _OBJECT}:
            nested: dict[str, list[int]] = {}
            for row, (k, v) in enumerate(zip(kinds, values)):
                if k in (_LIST, _OBJECT):
                    for what in _nested_problems(v):
                        nested.setdefault(what, []).append(row + 1)
            for what, rows in sorted(nested.items()):
                problems.append(f"column {name!r} holds {what} inside its lists or objects (rows "
                                f"{_examples(rows)}), which Braze cannot store")
        if name in _BRAZE_FORMATS and _STRING in present:
            pattern, wanted = _BRAZE_FORMATS[name]
            odd = [f"row {row + 1}: {v!r}" for row, (k, v) in enumerate(zip(kinds, values))
                   if k == _STRING and not pattern.match(str(v))]
            if odd:
                problems.append(f"column {name!r} is Braze's default attribute {name}, which takes {wanted}; "
                                f"{_examples(odd, 3)} would be misread: convert the values, or rename the "
                                f"column (e.g. {name + '_name'!r}) to make it a custom attribute")
        if _STRING in present and name in ("phone", "time_zone"):
            self._advise(name, kinds, values)
        if self.for_csv and _STRING in present and not self.clean_text:
            unsafe = [f"row {row + 1}: {v!r}" for row, (k, v) in enumerate(zip(kinds, values))
                      if k == _STRING and _CSV_UNSAFE.search(str(v))]
            if unsafe:
                problems.append(f"column {name!r} holds a double quotation mark, a line break or a control character "
                                f"(NUL, ESC ...), which Braze's CSV import cannot take (the row would be malformed): "
                                f"{_examples(unsafe, 3)}; pass clean_text=True to write ' for \" and a space for a "
                                "line break, and drop control characters")
        if _NUMBER in present:
            # Only floats can be infinite (and float() of a 400-digit int would overflow).
            bad = [row + 1 for row, (k, v) in enumerate(zip(kinds, values))
                   if k == _NUMBER and isinstance(v, (float, np.floating)) and not math.isfinite(v)]
            if bad:
                problems.append(f"column {name!r} holds infinite numbers (rows {_examples(bad)}), "
                                "which Braze cannot store")

    def _advise(self, name: str, kinds: list[str | None], values: list[Any]) -> None:
        if name == "phone":
            odd = [f"row {row + 1}: {v!r}" for row, (k, v) in enumerate(zip(kinds, values))
                   if k == _STRING and not _E164.match(str(v))]
            if odd:
                self.advice.append(f"column 'phone' has numbers not in E.164 ({_examples(odd, 3)}); Braze advises "
                                   "E.164, such as '+442071838750', for SMS and WhatsApp")
        else:
            zones = _time_zones()
            odd = [f"row {row + 1}: {v!r}" for row, (k, v) in enumerate(zip(kinds, values))
                   if k == _STRING and str(v) not in zones]
            if odd and zones:
                self.advice.append(f"column 'time_zone' has values that are not IANA time zone names "
                                   f"({_examples(odd, 3)}); Braze reads IANA names such as 'America/New_York' "
                                   "(and Rails names such as 'Eastern Time (US & Canada)')")

    def warn_advice(self) -> None:
        for text in self.advice:
            warn(text, BrazeFormatWarning)

    def id_header(self) -> list[str]:
        if self.id_type == "user_alias":
            return ["user_alias_name", "user_alias_label"]
        return [self.id_type]

    def id_object(self, row: int) -> dict[str, Any]:
        if self.id_type == "user_alias":
            return {"user_alias": {"alias_name": self.ids[row], "alias_label": self.alias_label}}
        return {self.id_type: self.ids[row]}


def to_braze_csv(
    table: pd.DataFrame, path: PathLike,
    *,
    external_id: str = "user_id", id_type: str = "external_id", alias_label: str | None = None,
    max_bytes: int = BRAZE_MAX_BYTES,
    private: bool | None = None,
    clean_text: bool = False,
) -> list[Path]:
    """Write ``table`` as a CSV file Braze's user import takes as it is.

    This file is for Braze, not for people: it has no spreadsheet escaping (a
    leading ``'`` would become part of the value in Braze), no byte-order mark,
    and lowercase ``true``/``false``. Give people :func:`to_csv` instead.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per user, e.g. from :func:`marketing_table`. Not changed.
    path : str or os.PathLike
        The file to write (its folder must exist).
    external_id : str, default "user_id"
        The column that holds the ids. It becomes the file's first column, named
        after ``id_type``; the other columns follow in order.
    id_type : {"external_id", "braze_id", "user_alias"}, default "external_id"
        How Braze finds the users: by external id, by Braze's own id (updates
        existing users only), or by alias (``user_alias_name`` with
        ``alias_label`` in ``user_alias_label``). One file uses one scheme.
    alias_label : str, optional
        The label of the aliases; required with ``id_type="user_alias"``.
    max_bytes : int, default 500 MiB (Braze's limit)
        A larger file is split into parts ``<stem>-1-of-N<suffix>`` ..., each
        with the header row and whole rows only. The parts replace their files
        together or not at all: when one cannot be written, every file is left as
        it was (an earlier export stays whole). Once written, the files of an
        earlier export of the same name that this one does not replace (its other
        ``-k-of-n`` parts, or ``path`` itself when this export is split) are
        removed, so no stale rows are imported again.
    private : bool, optional
        New files readable by their owner only (0600); None: when the table is
        marked as holding personal data (``include_pii=True``).
    clean_text : bool, default False
        Braze's CSV import cannot take a double quotation mark (it "will make the
        row malformed": Braze's user import troubleshooting), a line break or a
        control character (NUL, ESC ...) inside a value; such values are refused.
        True writes them cleaned instead: ``"`` as ``'``, a line break as a space,
        control characters dropped. Ids and column names are never changed.

    Returns
    -------
    list of Path
        The files written: ``[path]``, or the parts in order.

    Raises
    ------
    BrazeImportError
        Before anything is written, with every problem at once: no id column,
        missing, empty or duplicate ids, columns whose values mix types, lists
        or dicts (use :func:`to_braze_json`), infinite numbers, names Braze
        reserves (``external_id``, ``braze_id``, ``user_alias*`` ...) or that
        differ from a default attribute only by case (``Email``), default
        attributes the CSV import does not take (``push_tokens``,
        ``current_location``, ``facebook``, ``twitter``), repeated or empty
        names, text in a default attribute Braze reads in one format only
        (``country`` takes ``"GB"``, not ``"United Kingdom"``; ``language``,
        ``dob``, ``gender``, ``email_subscribe``, ``push_subscribe``), bytes,
        infinite numbers or bytes inside lists, a ``"``, line break or control
        character in a value (unless ``clean_text``), an id or a name; or when
        one row with the header exceeds ``max_bytes``.

    Warns
    -----
    BrazeFormatWarning
        A ``phone`` not in E.164 or a ``time_zone`` that is not an IANA name:
        Braze imports them, but advises those formats.

    Notes
    -----
    Braze infers each column's type, and reads quoted values as text. Cells are
    written as: booleans ``true``/``false``; numbers with ``.`` and no exponent
    or separators; datetimes in ISO 8601, UTC, with ``Z`` (naive ones taken as
    UTC; dates alone as ``YYYY-MM-DD``); missing values as empty cells, which
    leave the user's value in Braze alone. Text is quoted when Braze could read
    it as another type (``"00123"``, ``"+44..."``, ``"true"``, ``"2024-01-01"``)
    or when CSV needs it (commas, white space at either end, empty text
    ``""``). UTF-8 without BOM, ``\\n`` line ends, text that cannot be encoded
    written as U+FFFD; all the files are written or none (an earlier export of
    the same name stays whole).
    """
    whole_number("max_bytes", max_bytes, minimum=1, error=ValueError)
    checked = _BrazeTable(table, external_id=external_id, id_type=id_type, alias_label=alias_label,
                          for_csv=True, clean_text=clean_text)
    header = ",".join(_quote_if_needed(n, typed=False) for n in checked.id_header() + checked.names) + "\n"
    columns = [[_quote_if_needed(i, typed=True) for i in checked.ids]]
    if id_type == "user_alias":
        columns.append([_quote_if_needed(str(alias_label), typed=True)] * len(checked.ids))
    for position, kinds in zip(checked.positions, checked.kinds):
        values = table.iloc[:, position].tolist()
        if clean_text:
            values = [clean_csv_text(v) if k == _STRING and isinstance(v, str) else v for v, k in zip(values, kinds)]
        columns.append([_braze_csv_cell(v, k) for v, k in zip(values, kinds)])
    lines = [",".join(cells) + "\n" for cells in zip(*columns)]

    header_size = encoded_size(header)
    parts: list[list[str]] = [[]]
    used = header_size
    for row, line in enumerate(lines, start=1):
        line_size = encoded_size(line)
        if header_size + line_size > max_bytes:
            raise BrazeImportError(f"max_bytes={max_bytes:,} is too small: the header and row {row} alone "
                                   f"take {header_size + line_size:,} bytes")
        if parts[-1] and used + line_size > max_bytes:
            parts.append([])
            used = header_size
        parts[-1].append(line)
        used += line_size
    target = Path(path)
    names = [target] if len(parts) == 1 else [
        target.with_name(f"{target.stem}-{i}-of-{len(parts)}{target.suffix}") for i in range(1, len(parts) + 1)]
    # Some parts without the others would import a part of the users: all of them or none.
    with staged_files(names, mode=PRIVATE_MODE if is_private(table, private) else None) as streams:
        for stream, part in zip(streams, parts):
            stream.write(header)
            stream.writelines(part)
    _remove_stale_parts(target, keep=names)
    checked.warn_advice()
    return names


def _remove_stale_parts(target: Path, *, keep: Sequence[Path]) -> None:
    """Remove the files of an earlier export named like ``target`` that ``keep`` does not hold."""
    pattern = re.compile(re.escape(target.stem) + r"-\d+-of-\d+" + re.escape(target.suffix))
    kept = {path.name for path in keep}
    folder = target.parent
    stale = [path for path in folder.iterdir() if path.name not in kept and pattern.fullmatch(path.name)]
    if target.name not in kept:
        stale.append(target)
    for path in stale:
        if path.is_file() or path.is_symlink():
            path.unlink(missing_ok=True)


def to_braze_json(
    table: pd.DataFrame, path: PathLike,
    *,
    external_id: str = "user_id", id_type: str = "external_id", alias_label: str | None = None,
    batch: int = BRAZE_MAX_BATCH,
    private: bool | None = None,
) -> Path:
    """Write ``table`` as Braze ``/users/track`` request bodies, one per line (JSON Lines).

    Each line is ``{"attributes": [{"external_id": "...", "name": value, ...}, ...]}``
    with at most ``batch`` user objects: what a marketing engineer posts to Braze's
    REST API. Unlike Braze's CSV import this keeps lists (``rec_items: ["cookie",
    "cracker"]``, from ``marketing_table(..., items_as="list")``) and exact types.
    amptools itself never calls Braze.

    Parameters
    ----------
    table : pandas.DataFrame
        One row per user, e.g. from :func:`marketing_table`. Not changed.
    path : str or os.PathLike
        The file to write (its folder must exist), e.g. ``braze_track.jsonl``.
    external_id, id_type, alias_label :
        Where the ids come from and how Braze finds the users, as in
        :func:`to_braze_csv` (aliases become ``user_alias`` objects).
    batch : int, default 75
        User objects per line; Braze takes at most 75 per request.
    private : bool, optional
        As in :func:`to_braze_csv`.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    BrazeImportError
        With every problem at once, as :func:`to_braze_csv` (lists and dicts
        are allowed here, and so are ``"``, line breaks and control characters,
        which JSON escapes).

    Warns
    -----
    BrazeFormatWarning
        As :func:`to_braze_csv`.

    Notes
    -----
    Missing values are left out of the user's object, so Braze keeps its value
    (``null`` would delete the attribute). Booleans and numbers stay JSON
    booleans and numbers, text stays text (``"00123"`` too), datetimes become
    ISO 8601 text in UTC with ``Z``, lists keep their order (Braze keeps each
    item once and, by default, at most 25 items). UTF-8, text that cannot be
    encoded written as U+FFFD; the file is written whole or not at all.
    """
    whole_number("batch", batch, minimum=1, maximum=BRAZE_MAX_BATCH, error=ValueError)
    checked = _BrazeTable(table, external_id=external_id, id_type=id_type, alias_label=alias_label,
                          for_csv=False)
    columns = [table.iloc[:, position].tolist() for position in checked.positions]
    objects = []
    for row in range(len(table)):
        item = checked.id_object(row)
        for name, values, kinds in zip(checked.names, columns, checked.kinds):
            if kinds[row] is not None:
                item[name] = _braze_json_value(values[row], kinds[row])
        objects.append(item)
    target = Path(path)
    with write_atomic(target, mode=PRIVATE_MODE if is_private(table, private) else None) as stream:
        for start in range(0, len(objects), batch):
            body = {"attributes": objects[start:start + batch]}
            stream.write(json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n")
    checked.warn_advice()
    return target
