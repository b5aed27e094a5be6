"""Excel-safe CSV files: a CSV people open in Excel or Google Sheets without running a formula.

CSV injection
-------------
User properties come from client SDKs, so end users control them. A spreadsheet
runs a cell as a formula when it starts with ``=``, ``+``, ``-`` or ``@`` (and
some tools after stripping leading white space, tabs or line breaks). With
``excel_safe=True`` :func:`to_csv` neutralises every text cell the OWASP way, by
putting an apostrophe ``'`` in front. The rule, applied to **each segment** of a
text cell and to the header. A segment is a line (lines split as
:meth:`str.splitlines` splits them) or, within a line, the text after a ``;``:
Excel in locales whose list separator is ``;`` (German, French, Spanish ...)
splits a cell there, and quotes only protect the start of a field, so what
follows a ``;`` is treated like the start of a line:

1. A segment is *dangerous* when, after any leading white space, control or invisible
   format characters (space, NBSP, tab, CR, zero-width space, BOM ...), it starts
   with ``= + - @`` or their full-width forms ``＝ ＋ － ＠``, or when it starts
   with a tab or CR itself; or when it is not the cell's first segment and starts
   with ``"``: a reader that split the cell there (``;``-locale Excel) takes that
   for the opening quote of a new field.
2. A segment that already starts with ``'`` is escaped too, so the rule can be undone.
3. Escaping inserts one ``'`` at the very start of the segment
   (``"FR;=cmd"`` becomes ``"FR;'=cmd"``).
4. Exception: a whole cell that is a plain negative number written as text
   (``"-5"``, ``"-1.25"``, ``"-3e4"``) is left as it is: a spreadsheet reads it as
   the number it is, and runs nothing. ``"-1+1"``, ``"=1"`` and ``" -5"`` are
   escaped.

:func:`unescape_cell` undoes it exactly: drop one leading ``'`` from every segment
that starts with one. Numbers, booleans and timestamps from typed columns are
written as values, so negative numbers stay numbers.

Ids and Excel
-------------
A CSV file cannot tell Excel "this column is text" without a formula
(``="00123"`` is exactly what rule 1 forbids). amptools keeps ids **exactly** in
the file: ``00123`` and ``12345678901234567890`` are written as is, so the file
is lossless and any careful reader gets them back. Excel's double-click open (and
Google Sheets' default import) may still turn them into ``123`` and
``1.23457E+19``; import with *Data > From Text/CSV* and set the column to *Text*
instead. :func:`to_csv` warns (:class:`ExcelReformatWarning`) naming the columns
at risk.

Files are written whole or not at all, private when the table holds personal data
(:mod:`amptools.files`). The user guide is ``docs/export.md``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from datetime import datetime
from typing import IO, Any, TypeVar

import numpy as np
import pandas as pd

from ._types import PathLike
from .errors import AmptoolsWarning, warn
from .files import ENCODE_ERRORS, PRIVATE_MODE, is_private, write_atomic

__all__ = [
    "ExcelReformatWarning",
    "escape_cell",
    "to_csv",
    "unescape_cell",
]

PathOrBuffer = PathLike | IO[str] | IO[bytes]
# to_csv gives back what it was given: a Path for a Path, the stream for a stream.
_Destination = TypeVar("_Destination", bound=PathOrBuffer)


class ExcelReformatWarning(AmptoolsWarning):
    """Text in the CSV that Excel's default open would reformat (leading zeros, long numbers)."""


# -- the escaping rule ---------------------------------------------------------------------
_TRIGGERS = "=+-@\uff1d\uff0b\uff0d\uff20"
# White space, C0/C1 controls and invisible format characters a spreadsheet may skip.
_INVISIBLE = (
    r"\s\x00-\x20\x7f-\xa0\u00ad\u061c\u0600-\u0605\u1680\u180e\u2000-\u200f"
    r"\u2028-\u202f\u205f-\u206f\u3000\ufeff\ufff9-\ufffb\U000e0000-\U000e007f"
)
_DANGEROUS_LINE = re.compile(rf"^(?:[\t\r']|[{_INVISIBLE}]*[{re.escape(_TRIGGERS)}])")
# Exactly the boundaries str.splitlines() uses, plus ";" (where ";"-locale Excel splits
# a cell), kept so segments can be rejoined.
_SEGMENT_BREAK = re.compile(r"(\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029;])")
_PLAIN_NEGATIVE = re.compile(r"^-(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_NEEDS_LOOK = re.compile(rf"[{_INVISIBLE}{re.escape(_TRIGGERS)}'\";\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_EXCEL_REFORMATS = re.compile(r"^(?:0\d+|\d{16,})$")


def escape_cell(text: str) -> str:
    """Neutralise one text cell for spreadsheets (see the module docstring).

    Parameters
    ----------
    text : str
        The cell's text.

    Returns
    -------
    str
        ``text`` with ``'`` inserted before every dangerous segment (a line, or
        the text after a ``;``); unchanged when no segment is dangerous.
        ``unescape_cell(escape_cell(t)) == t`` for every ``t``.
    """
    if not text or not _NEEDS_LOOK.search(text):
        return text
    if _PLAIN_NEGATIVE.match(text):
        return text
    parts = _SEGMENT_BREAK.split(text)
    # parts alternates segment, break, segment, break, ..., segment.
    for i in range(0, len(parts), 2):
        if _DANGEROUS_LINE.match(parts[i]) or (i and parts[i][:1] == '"'):
            parts[i] = "'" + parts[i]
    return "".join(parts)


def unescape_cell(text: str) -> str:
    """Recover the original text of a cell written with ``excel_safe=True``.

    The rule: drop one leading ``'`` from every segment that starts with one
    (segments are lines, split as :meth:`str.splitlines` splits them, and the text
    after each ``;``). Cells that were not escaped have no such segment.

    Parameters
    ----------
    text : str
        A cell as read back from the file (e.g. with :func:`csv.reader`).

    Returns
    -------
    str
        The original text.
    """
    if "'" not in text:
        return text
    parts = _SEGMENT_BREAK.split(text)
    for i in range(0, len(parts), 2):
        if parts[i].startswith("'"):
            parts[i] = parts[i][1:]
    return "".join(parts)


# -- writing -----------------------------------------------------------------------------------
def _cell_writer(series: pd.Series, excel_safe: bool) -> list[str]:
    """The text of each cell of one column, in order."""
    dtype = series.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
        dtype = series.dtype
    if pd.api.types.is_datetime64_dtype(dtype):
        missing = series.isna().to_numpy()
        text = series.astype(str).tolist()
        return ["" if m else t for m, t in zip(missing, text)]
    if pd.api.types.is_bool_dtype(dtype) or (
        pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
    ):
        return [_value_text(v, False) for v in series.tolist()]
    return [_value_text(v, excel_safe) for v in series.tolist()]


def _value_text(value: Any, excel_safe: bool) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        return repr(float(value)) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, pd.Timestamp | datetime):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return str(stamp)
    text = value if isinstance(value, str) else str(value)
    return escape_cell(text) if excel_safe else text


def to_csv(
    df: pd.DataFrame,
    path: _Destination,
    *,
    excel_safe: bool = True,
    bom: bool = True,
    private: bool | None = None,
) -> _Destination:
    """Write ``df`` as a CSV file that Excel and Google Sheets open safely.

    UTF-8 (with a byte-order mark when ``bom``, so Excel detects the encoding),
    CRLF line ends and RFC 4180 quoting (fields with a comma, quote or line break
    are quoted; quotes are doubled). The index is not written; ``df`` is not
    changed.

    Parameters
    ----------
    df : pandas.DataFrame
        The table to write.
    path : str, os.PathLike or file-like
        A file path, or an open binary (``io.BytesIO``) or text stream. A text
        stream should be opened with ``newline=""`` so CRLF is not translated.
    excel_safe : bool, default True
        Neutralise text cells (and headers) that a spreadsheet would run as a
        formula (rule in the module docstring; undo with :func:`unescape_cell`).
        False writes the raw text.
    bom : bool, default True
        Start the file with the UTF-8 byte-order mark.
    private : bool, optional
        A new file is created readable by its owner only (0600). None (default):
        when ``df.attrs["amptools.personal_data"]`` is true, which
        :func:`marketing_table` sets with ``include_pii=True``. An existing file
        keeps its mode.

    Returns
    -------
    str, os.PathLike or file-like
        ``path``, as given.

    Warns
    -----
    ExcelReformatWarning
        When a text column holds values Excel would reformat on open (leading zeros,
        16 or more digits); the file still holds them exactly.

    Notes
    -----
    Cells are written as: numbers from numeric columns as numbers (``repr`` of
    floats, so they read back exactly); booleans as ``TRUE``/``FALSE``; timestamps
    as ``YYYY-MM-DD HH:MM:SS[.ffffff]`` in UTC (the offset is dropped because
    spreadsheets do not read it); missing values as empty cells; everything else as
    text. A path is written whole or not at all (:func:`write_atomic`); text that
    cannot be encoded (a lone surrogate) is written as U+FFFD, in files and in
    binary streams.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"to_csv expects a pandas DataFrame, got {type(df).__name__}")
    header = [str(name) for name in df.columns]
    if excel_safe:
        header = [escape_cell(name) for name in header]
    columns = [_cell_writer(df.iloc[:, i], excel_safe) for i in range(df.shape[1])]
    _warn_reformat(df)

    def write(stream: IO[str]) -> None:
        if bom:
            stream.write("\ufeff")
        writer = csv.writer(stream, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        writer.writerow(header)
        writer.writerows(zip(*columns) if columns else ([] for _ in range(len(df))))

    if hasattr(path, "write"):
        if isinstance(path, io.TextIOBase):
            write(path)
        elif isinstance(path, (io.RawIOBase, io.BufferedIOBase)):
            wrapper = io.TextIOWrapper(path, encoding="utf-8", newline="", errors=ENCODE_ERRORS)
            try:
                write(wrapper)
                wrapper.flush()
            finally:
                wrapper.detach()
        else:
            # Some other writable (a web framework's response, a zip member).
            buffer = io.StringIO(newline="")
            write(buffer)
            try:
                path.write(buffer.getvalue().encode("utf-8", ENCODE_ERRORS))  # type: ignore[arg-type]
            except TypeError:
                # A text-only writable; its declared type cannot say so.
                path.write(buffer.getvalue())  # type: ignore[call-overload]
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path or a writable stream, got {type(path).__name__}.")
    with write_atomic(path, mode=PRIVATE_MODE if is_private(df, private) else None) as stream:
        write(stream)
    return path


def _warn_reformat(df: pd.DataFrame) -> None:
    at_risk = []
    for position, name in enumerate(df.columns):
        series = df.iloc[:, position]  # by position: column names may repeat
        if pd.api.types.is_numeric_dtype(series.dtype) and not isinstance(
            series.dtype, pd.CategoricalDtype
        ):
            continue
        if any(isinstance(v, str) and _EXCEL_REFORMATS.match(v) for v in series.tolist()):
            at_risk.append(str(name))
    if at_risk:
        warn(
            f"column(s) {', '.join(at_risk)} hold ids with leading zeros or 16+ digits. The CSV "
            "keeps them exactly, but Excel's double-click open turns them into numbers; import "
            "with Data > From Text/CSV and set those columns to Text.",
            ExcelReformatWarning,
        )
