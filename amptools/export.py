"""Excel-safe CSV files and the marketing table.

CSV injection
-------------
User properties come from client SDKs, so end users control them. A spreadsheet
runs a cell as a formula when it starts with ``=``, ``+``, ``-`` or ``@`` (and
some tools after stripping leading white space, tabs or line breaks). With
``excel_safe=True`` :func:`to_csv` neutralises every text cell the OWASP way, by
putting an apostrophe ``'`` in front. The rule, applied to **each line** of a text
cell (lines split as :meth:`str.splitlines` splits them) and to the header:

1. A line is *dangerous* when, after any leading white space, control or invisible
   format characters (space, NBSP, tab, CR, zero-width space, BOM ...), it starts
   with ``= + - @`` or their full-width forms ``＝ ＋ － ＠``, or when it starts
   with a tab or CR itself.
2. A line that already starts with ``'`` is escaped too, so the rule can be undone.
3. Escaping inserts one ``'`` at the very start of the line.
4. Exception: a whole cell that is a plain negative number written as text
   (``"-5"``, ``"-1.25"``, ``"-3e4"``) is left as it is: a spreadsheet reads it as
   the number it is, and runs nothing. ``"-1+1"``, ``"=1"`` and ``" -5"`` are
   escaped.

:func:`unescape_cell` undoes it exactly: drop one leading ``'`` from every line
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
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from . import tables
from .errors import PersonalDataError

__all__ = [
    "ExcelReformatWarning",
    "PersonalDataError",
    "escape_cell",
    "is_personal_data_name",
    "marketing_table",
    "to_csv",
    "unescape_cell",
]

PathOrBuffer = str | os.PathLike[str] | IO[str] | IO[bytes]


class ExcelReformatWarning(UserWarning):
    """Text in the CSV that Excel's default open would reformat (leading zeros, long numbers)."""


# -- the escaping rule ---------------------------------------------------------------------
_TRIGGERS = "=+-@\uff1d\uff0b\uff0d\uff20"
# White space, C0/C1 controls and invisible format characters a spreadsheet may skip.
_INVISIBLE = (
    r"\s\x00-\x20\x7f-\xa0\u00ad\u061c\u0600-\u0605\u1680\u180e\u2000-\u200f"
    r"\u2028-\u202f\u205f-\u206f\u3000\ufeff\ufff9-\ufffb\U000e0000-\U000e007f"
)
_DANGEROUS_LINE = re.compile(rf"^(?:[\t\r']|[{_INVISIBLE}]*[{re.escape(_TRIGGERS)}])")
# Exactly the boundaries str.splitlines() uses, kept so lines can be rejoined.
_LINE_BREAK = re.compile(r"(\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029])")
_PLAIN_NEGATIVE = re.compile(r"^-(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_NEEDS_LOOK = re.compile(rf"[{_INVISIBLE}{re.escape(_TRIGGERS)}'\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
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
        ``text`` with ``'`` inserted before every dangerous line; unchanged when no
        line is dangerous. ``unescape_cell(escape_cell(t)) == t`` for every ``t``.
    """
    if not text or not _NEEDS_LOOK.search(text):
        return text
    if _PLAIN_NEGATIVE.match(text):
        return text
    parts = _LINE_BREAK.split(text)
    # parts alternates line, break, line, break, ..., line.
    for i in range(0, len(parts), 2):
        if _DANGEROUS_LINE.match(parts[i]):
            parts[i] = "'" + parts[i]
    return "".join(parts)


def unescape_cell(text: str) -> str:
    """Recover the original text of a cell written with ``excel_safe=True``.

    The rule: drop one leading ``'`` from every line that starts with one (lines
    split as :meth:`str.splitlines` splits them). Cells that were not escaped have
    no such line, except a plain negative number, which has no ``'`` anyway.

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
    parts = _LINE_BREAK.split(text)
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
    path: PathOrBuffer,
    *,
    excel_safe: bool = True,
    bom: bool = True,
) -> PathOrBuffer:
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
    text.
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
            write(path)  # type: ignore[arg-type]
        elif isinstance(path, (io.RawIOBase, io.BufferedIOBase)):
            wrapper = io.TextIOWrapper(path, encoding="utf-8", newline="")  # type: ignore[arg-type]
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
                path.write(buffer.getvalue().encode("utf-8"))  # type: ignore[arg-type]
            except TypeError:
                path.write(buffer.getvalue())  # type: ignore[arg-type]
        return path
    with open(Path(path), "w", encoding="utf-8", newline="") as stream:
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
        warnings.warn(
            f"column(s) {', '.join(at_risk)} hold ids with leading zeros or 16+ digits. The CSV "
            "keeps them exactly, but Excel's double-click open turns them into numbers; import "
            "with Data > From Text/CSV and set those columns to Text.",
            ExcelReformatWarning,
            stacklevel=3,
        )


# -- personal data -----------------------------------------------------------------------------
_PII_TOKENS = frozenset(
    {
        "email", "mail", "phone", "mobile", "tel", "telephone", "msisdn", "cellphone",
        "firstname", "lastname", "fullname", "surname", "username", "givenname",
        "familyname", "nickname", "address", "addr", "street", "zip", "zipcode",
        "postcode", "postal", "ip", "ipv4", "ipv6", "birthday", "birthdate", "dob",
        "birth", "ssn", "passport", "iban",
    }
)
_NAME_QUALIFIERS = frozenset(
    {"first", "last", "full", "given", "family", "middle", "user", "display", "real", "nick", "maiden", "sur"}
)
# A flag about a channel (email_opt_in, phone_verified) is not itself personal data.
_FLAG_TOKENS = frozenset(
    {"opt", "optin", "optout", "in", "out", "consent", "enabled", "verified", "subscribed",
     "unsubscribed", "bounced", "count", "valid", "confirmed"}
)
# An e-mail address anywhere in the text ("write to me: jo@example.org" counts).
_EMAIL_VALUE = re.compile(r"[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[A-Za-z]{2,}")


def _tokens(name: str) -> list[str]:
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [t for t in re.split(r"[^0-9a-z]+", name.lower()) if t]


def is_personal_data_name(name: str) -> bool:
    """Whether a property name looks like personal data.

    The ``gp:`` prefix is ignored and matching is case-insensitive, on the name's
    words (``gp:Email``, ``email_address``, ``phoneNumber``, ``first_name``,
    ``ip``, ``last_ip``, ``street``, ``zip``, ``birthday`` ...). ``name`` alone
    or with a person qualifier (``first_name``, ``display_name``) counts; other
    ``*_name`` properties (``plan_name``) do not. A flag about a channel
    (``email_opt_in``, ``phone_verified``) is not personal data by its name; its
    values are still checked by :func:`marketing_table`.

    Parameters
    ----------
    name : str
        The property name.

    Returns
    -------
    bool
    """
    if name.lower().startswith("gp:"):
        name = name[3:]
    tokens = _tokens(name)
    if not tokens:
        return False
    if any(t in _FLAG_TOKENS for t in tokens):
        return False
    if any(t in _PII_TOKENS for t in tokens) or "email" in name.lower():
        return True
    if "name" in tokens:
        others = [t for t in tokens if t != "name"]
        return all(t in _NAME_QUALIFIERS for t in others)
    return False


def _looks_like_email(values: Iterable[Any]) -> bool:
    return any(isinstance(v, str) and _EMAIL_VALUE.search(v) for v in values)


# -- marketing table ---------------------------------------------------------------------------
def marketing_table(
    ps: Any,
    *,
    rec_id: str | None = None,
    top_n: int = 5,
    cohorts: bool | Sequence[str] = True,
    props: bool | Sequence[str] = (),
    include_pii: bool = False,
) -> pd.DataFrame:
    """One row per user for a campaign: top recommendations, cohort flags, properties.

    Parameters
    ----------
    ps : ProfileSet, list of UserProfile, or list of response dicts
        The profiles (see :func:`amptools.tables.as_profiles`).
    rec_id : str, optional
        The recommendation set. None picks the only set; with several sets a
        ``ValueError`` lists them. A set no user has raises ``ValueError`` too.
    top_n : int, default 5
        How many items: columns ``rec_1`` .. ``rec_{top_n}``.
    cohorts : bool or sequence of str, default True
        True: a flag column per cohort seen; a list: those cohorts, in order;
        False: none.
    props : sequence of str or True, default ()
        Property columns, by name (``"favorite_category"`` also finds
        ``"gp:favorite_category"``). True: every property, except personal data
        unless ``include_pii``.
    include_pii : bool, default False
        Allow properties that look like personal data: by name (see
        :func:`is_personal_data_name`) or because a value looks like an e-mail
        address. Asking for one by name without it raises
        :class:`PersonalDataError`; with ``props=True`` they are left out.

    Returns
    -------
    pandas.DataFrame
        In order:

        - ``user_id``, ``device_id`` : str
        - ``rec_id`` : str — the chosen set (NaN when the user has none)
        - ``is_control`` : boolean — keep the control group apart in campaigns
        - ``recommendation_source`` : str
        - ``rec_1`` .. ``rec_{top_n}`` : str — items by rank; empty (NaN) when the
          user has no such set or fewer items
        - ``cohort:<id>`` : boolean per cohort (``<NA>`` when cohorts were not
          asked for)
        - one column per chosen property, named as asked, typed as in
          :func:`amptools.tables.properties`

    Raises
    ------
    ValueError
        Ambiguous or unknown ``rec_id``, bad ``top_n``, unknown property.
    PersonalDataError
        A property that looks like personal data was asked for by name without
        ``include_pii=True``.
    """
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ValueError(f"top_n must be a positive integer, got {top_n!r}")
    profiles = tables.as_profiles(ps)
    n = len(profiles)
    frame_columns: dict[str, Any] = tables._id_columns(profiles)

    # Recommendations, from the recommendations table.
    recs, rows = tables._recommendation_frame(profiles)
    available = sorted(str(r) for r in recs["rec_id"].unique() if isinstance(r, str))
    if rec_id is None:
        if len(available) > 1:
            raise ValueError(
                f"these profiles have {len(available)} recommendation sets "
                f"({', '.join(available)}); choose one with rec_id=..."
            )
        rec_id = available[0] if available else None
    elif rec_id not in available:
        raise ValueError(
            f"no profile has the recommendation set {rec_id!r}; available: "
            f"{', '.join(available) if available else 'none (were recommendations asked for?)'}"
        )
    chosen_set = np.full(n, np.nan, dtype=object)
    control = pd.array([pd.NA] * n, dtype="boolean")
    source = np.full(n, np.nan, dtype=object)
    items = np.full((n, top_n), np.nan, dtype=object)
    if rec_id is not None:
        keep = (recs["rec_id"] == rec_id).to_numpy() & (recs["rank"] <= top_n).to_numpy()
        positions = rows[keep]
        ranks = recs["rank"].to_numpy()[keep] - 1
        items[positions, ranks] = recs["item"].to_numpy(dtype=object)[keep]
        first = recs[keep & (recs["rank"] == 1).to_numpy()]
        first_rows = rows[keep & (recs["rank"] == 1).to_numpy()]
        chosen_set[first_rows] = rec_id
        control[first_rows] = first["is_control"].array
        source[first_rows] = first["recommendation_source"].to_numpy(dtype=object)
        # A set with no items has no rows; mark its user from the profile itself.
        for position, profile in enumerate(profiles):
            rec = profile.recommendation(rec_id)
            if rec is not None and not rec.items:
                chosen_set[position] = rec_id
                control[position] = pd.NA if rec.is_control is None else rec.is_control
                source[position] = rec.recommendation_source
    frame_columns["rec_id"] = pd.array(chosen_set, dtype="str")
    frame_columns["is_control"] = control
    frame_columns["recommendation_source"] = pd.array(source, dtype="str")
    for k in range(top_n):
        frame_columns[f"rec_{k + 1}"] = pd.array(items[:, k].copy(), dtype="str")

    # Cohort flags, from the cohort matrix.
    if cohorts is not False:
        chosen = None if cohorts is True else list(cohorts)  # type: ignore[arg-type]
        matrix = tables.cohort_matrix(profiles, cohorts=chosen)
        for name in matrix.columns[2:]:
            frame_columns[f"cohort:{name}"] = matrix[name].array

    # Properties, from the properties table.
    if props is not False and props != ():
        table = tables.properties(profiles)
        present = [str(c) for c in table.columns[2:]]
        if props is True:
            for name in present:
                if include_pii or not _is_pii(name, table[name]):
                    frame_columns[name] = table[name].array
        else:
            if isinstance(props, str):
                props = [props]
            for name in props:
                if not include_pii and is_personal_data_name(name):
                    raise PersonalDataError(
                        f"property {name!r} looks like personal data by its name; marketing "
                        "exports leave it out. Pass include_pii=True if you are allowed to "
                        "share it."
                    )
                column = name if name in present else f"gp:{name}" if f"gp:{name}" in present else None
                if column is None:
                    raise ValueError(
                        f"no profile has the property {name!r}; available: "
                        f"{', '.join(present) if present else 'none (were properties asked for?)'}"
                    )
                if not include_pii and _is_pii(column, table[column]):
                    raise PersonalDataError(
                        f"property {name!r} looks like personal data (a value holds an "
                        "e-mail address); marketing exports leave it out. Pass include_pii=True if you "
                        "are allowed to share it."
                    )
                frame_columns[name] = table[column].array
    return pd.DataFrame(frame_columns, copy=False)


def _is_pii(name: str, column: pd.Series) -> bool:
    if is_personal_data_name(name):
        return True
    if column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
        return _looks_like_email(column.dropna().tolist())
    return False
