"""Excel-safe CSV files, Braze import files and the marketing table.

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

Files on disk
-------------
Every file this module writes is written to a temporary name in the same folder
and renamed into place (:func:`write_atomic`), so a failure never leaves half a
file. Text that cannot be encoded in UTF-8 (a lone surrogate such as
``"\\ud800"``, which is valid JSON and so can come from the API) is written as
U+FFFD, the replacement character ``\ufffd``, instead of failing. A table made
with ``include_pii=True`` carries ``df.attrs["amptools.personal_data"] = True``;
such a table (or any written with ``private=True``) becomes a file readable by
its owner only (mode 0600). An existing file keeps its mode.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np
import pandas as pd

from . import tables
from ._types import CohortNamesLike, PathLike, ProfilesLike
from .errors import AmptoolsWarning, BrazeImportError, PersonalDataError, warn

__all__ = [
    "BRAZE_DEFAULT_ATTRIBUTES",
    "BRAZE_ID_TYPES",
    "BRAZE_MAX_BATCH",
    "BRAZE_MAX_BYTES",
    "BRAZE_RESERVED_NAMES",
    "BrazeImportError",
    "ExcelReformatWarning",
    "PERSONAL_DATA_ATTR",
    "PRIVATE_MODE",
    "PersonalDataError",
    "PropertyRenamedWarning",
    "REC_ITEMS_COLUMN",
    "escape_cell",
    "is_personal_data_name",
    "marketing_table",
    "to_braze_csv",
    "to_braze_json",
    "to_csv",
    "unescape_cell",
    "write_atomic",
]

PathOrBuffer = PathLike | IO[str] | IO[bytes]
# to_csv gives back what it was given: a Path for a Path, the stream for a stream.
_Destination = TypeVar("_Destination", bound=PathOrBuffer)

#: ``DataFrame.attrs`` key that marks a table holding personal data (set by
#: :func:`marketing_table` with ``include_pii=True``); its files get :data:`PRIVATE_MODE`.
PERSONAL_DATA_ATTR = "amptools.personal_data"
#: The mode of a new file that holds personal data: readable and writable by its owner only.
PRIVATE_MODE = 0o600


class ExcelReformatWarning(AmptoolsWarning):
    """Text in the CSV that Excel's default open would reformat (leading zeros, long numbers)."""


class PropertyRenamedWarning(AmptoolsWarning):
    """A property shares its name with a fixed column of the marketing table; it became ``prop:<name>``."""


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


# -- files -------------------------------------------------------------------------------------
def _replace_unencodable(error: UnicodeError) -> tuple[bytes, int]:
    # One U+FFFD per character that cannot be encoded (lone surrogates). As bytes:
    # CPython's UTF-8 encoder takes only ASCII text, or bytes, from a handler.
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return "\ufffd".encode() * (error.end - error.start), error.end


_ENCODE_ERRORS = "amptools.replacement-character"
codecs.register_error(_ENCODE_ERRORS, _replace_unencodable)


@contextlib.contextmanager
def write_atomic(
    path: PathLike,
    *,
    mode: int | None = None,
    binary: bool = False,
) -> Iterator[IO[Any]]:
    """Write a file whole or not at all.

    The content goes to a temporary file in the same folder, which replaces
    ``path`` (:func:`os.replace`) only when the ``with`` block ends without an
    error; on an error the temporary file is removed and ``path`` is left as it
    was. A symbolic link is followed: the file it points to is replaced.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write. Its folder must exist.
    mode : int, optional
        Permission bits of a **new** file, e.g. :data:`PRIVATE_MODE` (0600) for
        personal data; the process umask still applies. None: the usual
        ``0666`` minus the umask. An existing file keeps its own mode.
    binary : bool, default False
        Yield a binary stream. Otherwise a text stream: UTF-8, no newline
        translation (``newline=""``), and text that cannot be encoded (lone
        surrogates) written as U+FFFD.

    Yields
    ------
    file object
        The stream to write to.

    Examples
    --------
    >>> with write_atomic("out.csv", mode=PRIVATE_MODE) as stream:   # doctest: +SKIP
    ...     stream.write("user_id\\n")
    """
    target = Path(os.path.realpath(path))
    try:
        kept_mode: int | None = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        kept_mode = None
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    # os.open applies the umask to the mode, as open() does for a new file.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                         0o666 if mode is None else mode)
    try:
        if binary:
            stream: IO[Any] = os.fdopen(descriptor, "wb")
        else:
            stream = os.fdopen(descriptor, "w", encoding="utf-8", newline="", errors=_ENCODE_ERRORS)
    except BaseException:
        os.close(descriptor)
        temporary.unlink(missing_ok=True)
        raise
    try:
        with stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        if kept_mode is not None:
            os.chmod(temporary, kept_mode)
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _is_private(df: pd.DataFrame, private: bool | None) -> bool:
    return bool(df.attrs.get(PERSONAL_DATA_ATTR, False)) if private is None else bool(private)


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
            wrapper = io.TextIOWrapper(path, encoding="utf-8", newline="", errors=_ENCODE_ERRORS)
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
                path.write(buffer.getvalue().encode("utf-8", _ENCODE_ERRORS))  # type: ignore[arg-type]
            except TypeError:
                # A text-only writable; its declared type cannot say so.
                path.write(buffer.getvalue())  # type: ignore[call-overload]
        return path
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path or a writable stream, got {type(path).__name__}.")
    with write_atomic(path, mode=PRIVATE_MODE if _is_private(df, private) else None) as stream:
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
#: The list column of :func:`marketing_table` with ``items_as="list"``.
REC_ITEMS_COLUMN = "rec_items"
#: What a property is renamed to when its name is a fixed column's.
PROPERTY_PREFIX = "prop:"
# Names that read as the table's own columns even when this table lacks them (rec_7
# with top_n=5, a cohort flag with cohorts=False): a property never takes them.
_FIXED_NAME = re.compile(rf"^(?:rec_\d+|cohort:.*|{REC_ITEMS_COLUMN})$", re.DOTALL)


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key that puts ``cohort2`` before ``cohort10``."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


def _property_column(name: str, taken: Iterable[str]) -> str:
    """The column a property lands in: its own name, or ``prop:<name>`` when that is a fixed column's."""
    taken = set(taken)
    column = name
    while column in taken or _FIXED_NAME.match(column):
        column = PROPERTY_PREFIX + column
    return column


def marketing_table(
    ps: ProfilesLike,
    *,
    rec_id: str | None = None,
    top_n: int = 5,
    cohorts: bool | Sequence[str] = True,
    props: bool | Sequence[str] = (),
    include_pii: bool = False,
    items_as: str = "columns",
    names: CohortNamesLike = None,
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
        :class:`PersonalDataError`; with ``props=True`` they are left out. With
        it, the table is marked ``df.attrs["amptools.personal_data"] = True``
        and every file written from it is created readable by its owner only.
    items_as : {"columns", "list"}, default "columns"
        ``"columns"``: the items in ``rec_1`` .. ``rec_{top_n}`` (for CSV files);
        ``"list"``: in one column ``rec_items`` holding a list per user (for
        :func:`to_braze_json`, whose batches keep lists).
    names : cohort list, mapping or CohortClient, optional
        Cohort flag columns read ``cohort:<name>`` instead of ``cohort:<id>`` (see
        :func:`amptools.tables.cohort_names`); an id without a name stays an id.

    Returns
    -------
    pandas.DataFrame
        In order:

        - ``user_id``, ``device_id`` : str
        - ``rec_id`` : str — the chosen set (NaN when the user has none)
        - ``is_control`` : boolean — keep the control group apart in campaigns
        - ``recommendation_source`` : str
        - ``rec_1`` .. ``rec_{top_n}`` : str — items by rank; empty (NaN) when the
          user has no such set or fewer items. With ``items_as="list"`` instead
          ``rec_items`` : object — a list of up to ``top_n`` items in rank order
          (empty when the set has none; NaN when the user has no such set)
        - ``cohort:<id>`` : boolean per cohort (``<NA>`` when cohorts were not
          asked for), in natural order (``cohort2`` before ``cohort10``) unless
          a list was given
        - one column per chosen property, named as asked, typed as in
          :func:`amptools.tables.properties`. A property never replaces a column
          above: one named like them (``is_control``, ``rec_1``, ``cohort:x``,
          ``rec_items``) is kept as ``prop:<name>``, with one
          :class:`PropertyRenamedWarning` naming every such column.

    Raises
    ------
    ValueError
        Ambiguous or unknown ``rec_id``, bad ``top_n`` or ``items_as``, unknown
        property.
    PersonalDataError
        A property that looks like personal data was asked for by name without
        ``include_pii=True``.
    """
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ValueError(f"top_n must be a positive integer, got {top_n!r}")
    if items_as not in ("columns", "list"):
        raise ValueError(f'items_as must be "columns" or "list", got {items_as!r}')
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
    if items_as == "list":
        lists = np.full(n, np.nan, dtype=object)
        for row in np.flatnonzero(pd.notna(chosen_set)):
            lists[row] = [item for item in items[row] if isinstance(item, str)]
        frame_columns[REC_ITEMS_COLUMN] = lists
    else:
        for k in range(top_n):
            frame_columns[f"rec_{k + 1}"] = pd.array(items[:, k].copy(), dtype="str")

    # Cohort flags, from the cohort matrix.
    if cohorts is not False:
        chosen = None if cohorts is True else list(cohorts)
        matrix = tables.cohort_matrix(profiles, cohorts=chosen, names=names)
        headings = [str(name) for name in matrix.columns[2:]]
        if chosen is None:
            headings.sort(key=_natural_key)
        for heading in headings:
            frame_columns[f"cohort:{heading}"] = matrix[heading].array

    # Properties, from the properties table; they never replace the columns above.
    renamed: list[str] = []

    def put(name: str, values: Any) -> None:
        column = _property_column(name, frame_columns)
        if column != name:
            renamed.append(f"{name} -> {column}")
        frame_columns[column] = values

    if props is not False and props != ():
        table = tables.properties(profiles)
        present = [str(c) for c in table.columns[2:]]
        if props is True:
            for name in present:
                if include_pii or not _is_pii(name, table[name]):
                    put(name, table[name].array)
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
                put(name, table[column].array)
    if renamed:
        warn(
            f"{len(renamed)} propert{'y' if len(renamed) == 1 else 'ies'} named like the marketing "
            f"table's own columns kept under a prop: prefix: {', '.join(renamed)}.",
            PropertyRenamedWarning,
        )
    frame = pd.DataFrame(frame_columns, copy=False)
    if include_pii:
        frame.attrs[PERSONAL_DATA_ATTR] = True
    return frame


def _is_pii(name: str, column: pd.Series) -> bool:
    if is_personal_data_name(name):
        return True
    if column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
        return _looks_like_email(column.dropna().tolist())
    return False


# -- Braze ---------------------------------------------------------------------------------------
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
# Default attributes whose text Braze reads in one format only (a country *name* in
# ``country`` would be misread): the format, and how to say it.
_SUBSCRIPTION = (re.compile(r"^(?:opted_in|unsubscribed|subscribed)$"), "opted_in, unsubscribed or subscribed")
_BRAZE_FORMATS = {
    "country": (re.compile(r"^[A-Za-z]{2}$"), "ISO 3166-1 alpha-2 codes such as 'GB'"),
    "language": (re.compile(r"^[A-Za-z]{2}(?:[-_][A-Za-z0-9]{2,4})?$"), "ISO 639-1 codes such as 'en'"),
    "dob": (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "dates written YYYY-MM-DD"),
    "email_subscribe": _SUBSCRIPTION,
    "push_subscribe": _SUBSCRIPTION,
}
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

_BOOLEAN, _NUMBER, _DATETIME, _STRING, _LIST, _OBJECT = (
    "boolean", "number", "datetime", "string", "list", "object")
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


class _BrazeTable:
    """A table checked against Braze's import rules: ids, data columns and each value's kind."""

    def __init__(self, table: pd.DataFrame, *, external_id: str, id_type: str, alias_label: str | None,
                 lists_allowed: bool) -> None:
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(table).__name__}")
        if id_type not in BRAZE_ID_TYPES:
            raise ValueError(f"id_type must be one of {', '.join(BRAZE_ID_TYPES)}, got {id_type!r}")
        if id_type == "user_alias" and not (isinstance(alias_label, str) and alias_label.strip()):
            raise ValueError('id_type="user_alias" needs alias_label=..., the label that groups the aliases')
        self.id_type = id_type
        self.alias_label = alias_label
        problems: list[str] = []
        names = [str(name) for name in table.columns]
        self.ids: list[str] = []
        if external_id not in names:
            problems.append(f"no column {external_id!r} to take the ids from (columns: {', '.join(names)}); "
                            "name the id column with external_id=...")
        else:
            self.ids = self._check_ids(table.iloc[:, names.index(external_id)], external_id, problems)
        self.positions = [i for i, name in enumerate(names) if name != external_id]
        self.names = [names[i] for i in self.positions]
        self._check_names(problems)
        self.kinds: list[list[str | None]] = []
        for position, name in zip(self.positions, self.names):
            series = table.iloc[:, position]
            kinds = _column_kinds(series)
            self.kinds.append(kinds)
            self._check_values(name, series, kinds, lists_allowed, problems)
        if problems:
            error = BrazeImportError(
                f"this table is not ready for Braze's user import ({len(problems)} "
                f"problem{'s' if len(problems) > 1 else ''}); nothing was written:\n"
                + "\n".join(f"  - {p}" for p in problems))
            error.problems = tuple(problems)
            raise error
        self.table = table

    @staticmethod
    def _check_ids(series: pd.Series, name: str, problems: list[str]) -> list[str]:
        ids: list[str] = []
        empty: list[int] = []
        odd: list[str] = []
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
            ids.append(value)
        if empty:
            problems.append(f"{len(empty)} row(s) have no id in {name!r} (rows {_examples(empty)}): "
                            "Braze skips them; drop them or take the ids from another column")
        if odd:
            problems.append(f"ids in {name!r} must be text: {_examples(odd)}")
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
        counts = pd.Series(self.names, dtype=object).value_counts()
        twice = [repr(n) for n, k in counts[counts > 1].items()]
        if twice:
            problems.append(f"column name(s) {', '.join(twice)} appear more than once")
        if any(not n.strip() for n in self.names):
            problems.append("a column has an empty name")

    @staticmethod
    def _check_values(name: str, series: pd.Series, kinds: list[str | None], lists_allowed: bool,
                      problems: list[str]) -> None:
        present = {k for k in kinds if k is not None}
        first = {k: kinds.index(k) for k in present}
        if len(present) > 1:
            seen = ", ".join(f"{k} (row {first[k] + 1}: {series.iloc[first[k]]!r})" for k in sorted(present))
            problems.append(f"column {name!r} mixes types: {seen}; Braze needs one type per column, "
                            "so convert it first (e.g. .astype(str))")
        if _LIST in present and not lists_allowed:
            problems.append(f"column {name!r} holds lists, which Braze's CSV import does not take: write "
                            "to_braze_json(...) for the /users/track API, or marketing_table(..., "
                            "items_as=\"columns\") for rec_1..rec_N")
        if _OBJECT in present and not lists_allowed:
            problems.append(f"column {name!r} holds objects (dicts), which Braze's CSV import does not take: "
                            "write to_braze_json(...) instead")
        if name in _BRAZE_FORMATS and _STRING in present:
            pattern, wanted = _BRAZE_FORMATS[name]
            odd = [f"row {row + 1}: {v!r}" for row, (k, v) in enumerate(zip(kinds, series.tolist()))
                   if k == _STRING and not pattern.match(str(v))]
            if odd:
                problems.append(f"column {name!r} is Braze's default attribute {name}, which takes {wanted}; "
                                f"{_examples(odd, 3)} would be misread: convert the values, or rename the "
                                f"column (e.g. {name + '_name'!r}) to make it a custom attribute")
        if _NUMBER in present:
            # Only floats can be infinite (and float() of a 400-digit int would overflow).
            bad = [row + 1 for row, (k, v) in enumerate(zip(kinds, series.tolist()))
                   if k == _NUMBER and isinstance(v, (float, np.floating)) and not math.isfinite(v)]
            if bad:
                problems.append(f"column {name!r} holds infinite numbers (rows {_examples(bad)}), "
                                "which Braze cannot store")

    def id_header(self) -> list[str]:
        if self.id_type == "user_alias":
            return ["user_alias_name", "user_alias_label"]
        return [self.id_type]

    def id_object(self, row: int) -> dict[str, Any]:
        if self.id_type == "user_alias":
            return {"user_alias": {"alias_name": self.ids[row], "alias_label": self.alias_label}}
        return {self.id_type: self.ids[row]}


def _check_positive(name: str, value: Any, upper: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1 or (
            upper is not None and value > upper):
        limit = f" and at most {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be a positive integer{limit}, got {value!r}")


def to_braze_csv(
    table: pd.DataFrame, path: PathLike,
    *,
    external_id: str = "user_id", id_type: str = "external_id", alias_label: str | None = None,
    max_bytes: int = BRAZE_MAX_BYTES,
    private: bool | None = None,
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
        with the header row and whole rows only. When writing one part fails,
        the parts already written are removed again.
    private : bool, optional
        New files readable by their owner only (0600); None: when the table is
        marked as holding personal data (``include_pii=True``).

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
        differ from a default attribute only by case (``Email``), repeated or
        empty names, text in a default attribute Braze reads in one format only
        (``country`` takes ``"GB"``, not ``"United Kingdom"``; ``language``,
        ``dob``, ``email_subscribe``, ``push_subscribe``); or when one row with
        the header exceeds ``max_bytes``.

    Notes
    -----
    Braze infers each column's type, and reads quoted values as text. Cells are
    written as: booleans ``true``/``false``; numbers with ``.`` and no exponent
    or separators; datetimes in ISO 8601, UTC, with ``Z`` (naive ones taken as
    UTC; dates alone as ``YYYY-MM-DD``); missing values as empty cells, which
    leave the user's value in Braze alone. Text is quoted when Braze could read
    it as another type (``"00123"``, ``"+44..."``, ``"true"``, ``"2024-01-01"``)
    or when CSV needs it (commas, quotes, line breaks, white space at either
    end, empty text ``""``). UTF-8 without BOM, ``\\n`` line ends, text that
    cannot be encoded written as U+FFFD; each file is written whole or not at
    all (:func:`write_atomic`).
    """
    _check_positive("max_bytes", max_bytes)
    checked = _BrazeTable(table, external_id=external_id, id_type=id_type, alias_label=alias_label,
                          lists_allowed=False)
    header = ",".join(_quote_if_needed(n, typed=False) for n in checked.id_header() + checked.names) + "\n"
    columns = [[_quote_if_needed(i, typed=True) for i in checked.ids]]
    if id_type == "user_alias":
        columns.append([_quote_if_needed(str(alias_label), typed=True)] * len(checked.ids))
    for position, kinds in zip(checked.positions, checked.kinds):
        values = table.iloc[:, position].tolist()
        columns.append([_braze_csv_cell(v, k) for v, k in zip(values, kinds)])
    lines = [",".join(cells) + "\n" for cells in zip(*columns)]

    def size(text: str) -> int:
        return len(text.encode("utf-8", _ENCODE_ERRORS))

    header_size = size(header)
    parts: list[list[str]] = [[]]
    used = header_size
    for row, line in enumerate(lines, start=1):
        line_size = size(line)
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
    mode = PRIVATE_MODE if _is_private(table, private) else None
    done: list[Path] = []
    try:
        for name, part in zip(names, parts):
            with write_atomic(name, mode=mode) as stream:
                stream.write(header)
                stream.writelines(part)
            done.append(name)
    except BaseException:
        # Some parts without the others would import a part of the users: none, then.
        for name in done:
            name.unlink(missing_ok=True)
        raise
    return names


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
        are allowed here).

    Notes
    -----
    Missing values are left out of the user's object, so Braze keeps its value
    (``null`` would delete the attribute). Booleans and numbers stay JSON
    booleans and numbers, text stays text (``"00123"`` too), datetimes become
    ISO 8601 text in UTC with ``Z``, lists keep their order (Braze keeps each
    item once and, by default, at most 25 items). UTF-8, text that cannot be
    encoded written as U+FFFD; the file is written whole or not at all.
    """
    _check_positive("batch", batch, BRAZE_MAX_BATCH)
    checked = _BrazeTable(table, external_id=external_id, id_type=id_type, alias_label=alias_label,
                          lists_allowed=True)
    columns = [table.iloc[:, position].tolist() for position in checked.positions]
    objects = []
    for row in range(len(table)):
        item = checked.id_object(row)
        for name, values, kinds in zip(checked.names, columns, checked.kinds):
            if kinds[row] is not None:
                item[name] = _braze_json_value(values[row], kinds[row])
        objects.append(item)
    target = Path(path)
    with write_atomic(target, mode=PRIVATE_MODE if _is_private(table, private) else None) as stream:
        for start in range(0, len(objects), batch):
            body = {"attributes": objects[start:start + batch]}
            stream.write(json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n")
    return target
