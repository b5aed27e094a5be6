"""Ids: what one is (:func:`validate_id`), the unique ones of a list (:func:`unique_ids`),
a reproducible pick of an org's (:func:`sample_ids`), and reading them the way analysts
have them — pasted text or a CSV file (:func:`parse_ids`, :func:`parse_id_file`).

The first module of the data flow: a query names its ids with these rules. The explorer
(pasted text, uploaded files) and the command line (an ids file or stdin) read the same
file the same way: a ``user_id`` or ``device_id`` column (any case;
``userid``/``user``/``deviceid``/``device`` too) in a comma, semicolon, tab or pipe
separated file, else one id per line. Values stay text, so leading zeros and long
numeric ids survive.
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import InvalidQueryError, whole_number

__all__ = ["ID_TYPES", "SEPARATORS", "TEST_USER", "IdType", "ParsedIds", "parse_id_file", "parse_ids", "sample_ids",
           "unique_ids", "validate_id"]

IdType = Literal["user_id", "device_id"]
#: The ids a user can be asked by; also the key columns of every table, in this order.
ID_TYPES: tuple[IdType, IdType] = ("user_id", "device_id")
#: The documented test user, which every org (the sample org too) answers.
TEST_USER = "testUser"
_SURROGATE = re.compile("[\ud800-\udfff]")
# How many bad ids an error names (with their positions).
_BAD_IDS_SHOWN = 5

#: How pasted text may be split; ``auto`` is explained in :func:`parse_ids`.
SEPARATORS = ("auto", "lines", "commas", "whitespace")

_COLUMN_NAMES = {"user_id": "user_id", "userid": "user_id", "user": "user_id",
                 "device_id": "device_id", "deviceid": "device_id", "device": "device_id"}
_QUOTES = "\"'"


# ------------------------------------------------------------------------------- one id, many
def validate_id(value: object, name: str = "user_id") -> str:
    """Return ``value`` as an id string, or raise :class:`InvalidQueryError`.

    Ids may hold any characters (they are URL-encoded when sent), but must be
    non-empty and not only white space. Integers are accepted and turned into text
    (ids read from spreadsheets often arrive as numbers); floats, booleans and
    None are refused because their text form is ambiguous (``1e21``, ``1.0``).
    """
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise InvalidQueryError(
            f"{name} must be text, got {type(value).__name__} {value!r}; "
            "pass ids as strings (read CSV columns with dtype=str to keep leading zeros)."
        )
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidQueryError(f"{name} must be text, got {type(value).__name__}.")
    if not value.strip():
        raise InvalidQueryError(f"{name} is empty or blank; give a non-empty id.")
    if "\x00" in value or _SURROGATE.search(value):
        # A lone surrogate cannot be sent (it is not encodable) nor stored; a NUL is
        # never part of a real id. Both come from broken decoding upstream.
        raise InvalidQueryError(
            f"{name} {ascii(value)} "
            "holds a NUL or a lone surrogate (text that was decoded wrongly); fix the id at "
            "its source or read the file as UTF-8.")
    return value


def unique_ids(ids: Iterable[str | int] | str, id_type: str = "user_id") -> list[str]:
    """Validate every id and return the unique ones in input order.

    ``ids`` comes from users (a list, a Series, a generator, one id): anything else
    is refused with a message, whatever its static type says.

    Raises
    ------
    InvalidQueryError
        Before any request, listing the first few bad ids and their positions.
    """
    items: Iterable[object] = ids
    if isinstance(ids, (str, bytes)):
        items = [ids]
    elif type(ids).__name__ == "DataFrame" and hasattr(ids, "columns"):  # pandas, not imported here
        raise InvalidQueryError(
            "ids is a DataFrame; pass one column of it, e.g. df['user_id']."
        )
    elif not isinstance(ids, Iterable):
        raise InvalidQueryError(
            f"ids must be an iterable of ids (a list, a pandas Series, a generator), "
            f"got {type(ids).__name__}."
        )
    seen: dict[str, None] = {}
    bad: list[tuple[int, Any, str]] = []
    n_bad = 0
    for position, value in enumerate(items):
        if hasattr(value, "item") and type(value).__module__ == "numpy" and not isinstance(value, float):
            value = value.item()  # numpy integers from arrays are plain ids too
        try:
            seen[validate_id(value, id_type)] = None
        except InvalidQueryError as error:
            n_bad += 1
            if len(bad) < _BAD_IDS_SHOWN:
                bad.append((position, value, str(error).split(";")[0]))
    if n_bad:
        shown = "; ".join(f"position {p}: {v!r} ({why})" for p, v, why in bad)
        more = f" (and {n_bad - len(bad)} more)" if n_bad > len(bad) else ""
        raise InvalidQueryError(
            f"{n_bad} {id_type}{'s are' if n_bad > 1 else ' is'} not valid, nothing was fetched: "
            f"{shown}{more}. Ids must be non-blank text (integers are accepted); read CSV "
            "columns with dtype=str and drop missing values first."
        )
    return list(seen)


def sample_ids(
    org_ids: Sequence[str], n: int, *, seed: int = 0, include: Sequence[str] = (TEST_USER,)
) -> list[str]:
    """A reproducible pick of ``n`` ids from an org's ids.

    Parameters
    ----------
    org_ids : sequence of str
        Every id of the org (for the sample org: ``SampleServer.org.user_ids``).
    n : int
        How many ids to return (at most ``len(org_ids)``).
    seed : int
        Another seed gives another pick.
    include : sequence of str
        Ids always in the pick, first, when they belong to the org (``testUser``).

    Returns
    -------
    list of str
    """
    whole_number("the number of users", n, minimum=0, error=InvalidQueryError)
    total = len(org_ids)
    n = min(n, total)
    chosen: list[str] = [i for i in include if i in org_ids][:n]
    taken = set(chosen)
    rng = random.Random(seed)
    # Index sampling, not list(org_ids): an org's id sequence may be computed lazily.
    for index in rng.sample(range(total), min(total, n + len(taken))):
        if len(chosen) >= n:
            break
        value = org_ids[index]
        if value not in taken:
            taken.add(value)
            chosen.append(value)
    return chosen


# ---------------------------------------------------------------------------- choosing users
@dataclass(frozen=True)
class ParsedIds:
    """Ids read from pasted text or a file, with what was left out.

    Attributes
    ----------
    ids : list of str
        The unique ids, in the order they first appear.
    duplicates : list of str
        Ids that appeared more than once (each listed once), in first-seen order.
    blanks : int
        Blank entries that were ignored (empty lines, doubled separators).
    id_type : {"user_id", "device_id"} or None
        The id type a CSV header named (``user_id`` or ``device_id`` column);
        None when the input did not say.
    """

    ids: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    blanks: int = 0
    id_type: str | None = None

    @property
    def message(self) -> str:
        """One line for the analyst: how many ids, and which duplicates were dropped."""
        if not self.ids:
            return "No ids yet."
        kind = {"user_id": "user id", "device_id": "device id"}.get(self.id_type or "", "id")
        text = f"{len(self.ids):,} {kind}{'s' if len(self.ids) != 1 else ''}"
        if self.duplicates:
            shown = ", ".join(repr(d) for d in self.duplicates[:5])
            more = f" and {len(self.duplicates) - 5} more" if len(self.duplicates) > 5 else ""
            text += (f"; {len(self.duplicates)} duplicate{'s' if len(self.duplicates) != 1 else ''}"
                     f" asked once: {shown}{more}")
        return text + "."


def _dedupe(tokens: Iterable[str], *, blanks: int = 0, id_type: str | None = None) -> ParsedIds:
    seen: dict[str, None] = {}
    duplicates: dict[str, None] = {}
    for token in tokens:
        token = token.strip()
        if len(token) >= 2 and token[0] == token[-1] and token[0] in _QUOTES:
            token = token[1:-1].strip()
        if not token:
            blanks += 1
            continue
        if token in seen:
            duplicates[token] = None
        else:
            seen[token] = None
    return ParsedIds(list(seen), list(duplicates), blanks, id_type)


def parse_ids(text: str, *, separator: str = "auto") -> ParsedIds:
    """Split pasted text into ids.

    Parameters
    ----------
    text : str
        What the analyst pasted.
    separator : {"auto", "lines", "commas", "whitespace"}
        ``lines``: one id per line (ids may then hold spaces and commas, as some
        real ids do). ``commas``: commas and line breaks. ``whitespace``: any run of
        spaces, tabs or line breaks. ``auto``: one id per line when the text has
        several non-blank lines; a single line is split on commas when it has any,
        else on white space.

    Returns
    -------
    ParsedIds
        Unique ids in first-seen order, the duplicates, the count of blank entries.
        Surrounding quotes (``"a"``) are removed; blank entries are ignored.
    """
    if separator not in SEPARATORS:
        raise InvalidQueryError(f"separator must be one of {', '.join(SEPARATORS)}, got {separator!r}.")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if separator == "auto":
        lines = [line for line in text.split("\n") if line.strip()]
        if len(lines) > 1:
            separator = "lines"
        elif lines and "," in lines[0]:
            separator = "commas"
        else:
            separator = "whitespace"
    if separator == "lines":
        tokens = text.split("\n")
    elif separator == "commas":
        tokens = re.split(r"[,\n]", text)
    else:
        tokens = text.split()
    blanks = 0
    if separator == "lines":
        # A trailing newline is not a blank entry worth reporting.
        blanks = sum(1 for t in tokens[:-1] if not t.strip())
        tokens = [t for t in tokens if t.strip()]
    return _dedupe(tokens, blanks=blanks)


# Multi-byte UTF-8 sequences: a file that has them is a UTF-8 file, whatever else it holds.
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _decode(content: bytes | bytearray | memoryview | str) -> str:
    """The file's text: UTF-16 (with its BOM), UTF-8 (BOM or not), else Windows-1252.

    A UTF-8 file with a stray byte of another encoding is not read as cp1252 whole
    (that would garble every other non-ASCII id): the line is named in the error.
    Binary files (NUL bytes outside UTF-16) are refused.
    """
    if isinstance(content, str):
        text = content
    else:
        raw = bytes(content)
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            try:
                text = raw.decode("utf-16")
            except UnicodeDecodeError:
                raise InvalidQueryError(
                    "the file starts like UTF-16 but is not valid UTF-16; save it again as "
                    "UTF-8 (CSV UTF-8 in Excel).") from None
        else:
            if b"\x00" in raw:
                raise InvalidQueryError(
                    "the file holds NUL bytes, so it is binary (a spreadsheet, an archive?), "
                    "not a list of ids: export it as CSV (UTF-8) first.")
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError as error:
                if not _UTF8_SEQUENCE.search(raw):
                    # No UTF-8 at all: Excel on Windows saves CSV in the ANSI code page.
                    return raw.decode("cp1252", errors="replace")
                line = raw.count(b"\n", 0, error.start) + 1
                raise InvalidQueryError(
                    f"line {line} is not valid UTF-8 (byte 0x{raw[error.start]:02X}), while the rest "
                    "of the file is UTF-8: that line was probably pasted from another encoding. "
                    "Fix it, or save the whole file again as UTF-8.") from None
    if "\x00" in text:
        raise InvalidQueryError("the ids hold a NUL character: this is not a text list of ids.")
    return text


def parse_id_file(
    content: bytes | bytearray | memoryview | str,
    *,
    id_type: str | None = None,
    column: str | None = None,
) -> ParsedIds:
    """Read ids from an uploaded CSV.

    Parameters
    ----------
    content : bytes or str
        The file's content (UTF-8 with or without BOM, UTF-16, or Windows-1252).
    id_type : {"user_id", "device_id"}, optional
        Which column to prefer when the header has both.
    column : str, optional
        The id column's name when it is neither of those (matched ignoring case).

    Returns
    -------
    ParsedIds
        When the first row has a ``user_id`` or ``device_id`` column (any case;
        ``userid``/``user`` and ``deviceid``/``device`` too), the ids of that column and
        ``id_type`` set to it; otherwise one id per line (the whole line) and
        ``id_type`` None. Values are kept as text (leading zeros survive).

    Raises
    ------
    InvalidQueryError
        When the file has a recognised header but no column for the ids asked for.
    """
    text = _decode(content).replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    first = next((line for line in lines if line.strip()), "")
    try:
        dialect: Any = csv.Sniffer().sniff(first, delimiters=",;\t|") if first else csv.excel
    except csv.Error:
        dialect = csv.excel
    header = next(csv.reader([first], dialect)) if first else []
    names = [name.strip().strip(_QUOTES) for name in header]
    repeated = sorted({name for name in names
                       if name and [n.lower() for n in names].count(name.lower()) > 1})
    if repeated and (column is not None or any(_COLUMN_NAMES.get(n.lower()) for n in repeated)):
        raise InvalidQueryError(
            f"the header names the column {', '.join(map(repr, repeated))} more than once, so "
            "which one holds the ids is unclear: rename or remove the extra column.")
    if column is not None:
        wanted = [i for i, name in enumerate(names) if name.lower() == column.strip().lower()]
        if not wanted:
            raise InvalidQueryError(
                f"the file has no column named {column!r}; its first row is: {', '.join(names)}."
            )
        columns = {_COLUMN_NAMES.get(column.strip().lower(), id_type): wanted[0]}
    else:
        columns = {_COLUMN_NAMES.get(name.lower()): i for i, name in enumerate(names)}
        columns.pop(None, None)
    if not columns:
        blanks = sum(1 for line in lines[:-1] if not line.strip())
        return _dedupe((line for line in lines if line.strip()), blanks=blanks)
    if id_type is not None and id_type not in ID_TYPES:
        raise InvalidQueryError(f"id_type must be one of {', '.join(ID_TYPES)}, got {id_type!r}.")
    if column is not None:
        (chosen, index), = columns.items()  # the named column, whatever the id type
        return _read_column(lines, first, dialect, index, chosen)
    chosen = id_type if id_type in columns else ("user_id" if "user_id" in columns else "device_id")
    return _read_column(lines, first, dialect, columns[chosen], chosen)


def _read_column(lines: list[str], first: str, dialect: Any, index: int, chosen: str | None) -> ParsedIds:
    rows = list(csv.reader(io.StringIO("\n".join(lines[lines.index(first) + 1:])), dialect))
    values: list[str] = []
    blanks = 0
    for row in rows:
        if not any(cell.strip() for cell in row):
            continue  # an empty line
        value = row[index] if index < len(row) else ""
        if value.strip():
            values.append(value)
        else:
            blanks += 1
    return _dedupe(values, blanks=blanks, id_type=chosen)
