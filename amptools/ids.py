"""Reading ids the way analysts have them: pasted text or a CSV file.

Shared by the explorer (pasted text, uploaded files) and the command line (an ids
file or stdin), so both read the same file the same way: a ``user_id`` or
``device_id`` column (any case; ``userid``/``user``/``deviceid``/``device`` too) in a
comma, semicolon, tab or pipe separated file, else one id per line. Values stay
text, so leading zeros and long numeric ids survive.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidQueryError
from .query import ID_TYPES

__all__ = ["SEPARATORS", "ParsedIds", "parse_id_file", "parse_ids"]

#: How pasted text may be split; ``auto`` is explained in :func:`parse_ids`.
SEPARATORS = ("auto", "lines", "commas", "whitespace")

_COLUMN_NAMES = {"user_id": "user_id", "userid": "user_id", "user": "user_id",
                 "device_id": "device_id", "deviceid": "device_id", "device": "device_id"}
_QUOTES = "\"'"


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


def _decode(content: bytes | bytearray | memoryview | str) -> str:
    if isinstance(content, str):
        return content
    raw = bytes(content)
    for encoding in ("utf-8-sig", "utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    # Excel on Windows saves CSV in the ANSI code page.
    return raw.decode("cp1252", errors="replace")


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
    chosen = id_type if id_type in columns else ("user_id" if "user_id" in columns else "device_id")
    index = columns[chosen]
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
