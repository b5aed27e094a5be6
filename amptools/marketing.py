"""The marketing table: one row per user for a campaign, and which properties are personal data.

:func:`marketing_table` is built in three named steps — the recommendation columns, the
cohort flags, the property columns — each a function of the profiles. The user guide is
``docs/export.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import tables
from ._types import CohortNamesLike, ProfilesLike
from .errors import AmptoolsWarning, PersonalDataError, warn, whole_number
from .frames import deprecated_arguments
from .files import PERSONAL_DATA_ATTR
from .models import UserProfile

__all__ = [
    "PROPERTY_PREFIX",
    "PropertyRenamedWarning",
    "REC_ITEMS_COLUMN",
    "is_personal_data_name",
    "marketing_table",
]


class PropertyRenamedWarning(AmptoolsWarning):
    """A property shares its name with a fixed column of the marketing table; it became ``prop:<name>``."""


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


# -- the table ----------------------------------------------------------------------------------
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


def _column_for_property(name: str, taken: Iterable[str]) -> str:
    """The column a property lands in: its own name, or ``prop:<name>`` when that is a fixed column's."""
    taken = set(taken)
    column = name
    while column in taken or _FIXED_NAME.match(column):
        column = PROPERTY_PREFIX + column
    return column


@deprecated_arguments(ps="profiles")
def marketing_table(
    profiles: ProfilesLike,
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
    profiles : ProfileSet, list of UserProfile, or list of response dicts (formerly ``ps=``, deprecated)
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
    whole_number("top_n", top_n, minimum=1, error=ValueError)
    if items_as not in ("columns", "list"):
        raise ValueError(f'items_as must be "columns" or "list", got {items_as!r}')
    profiles = tables.as_profiles(profiles)
    columns: dict[str, Any] = {
        "user_id": pd.array([p.user_id for p in profiles], dtype=tables.ID_DTYPE),
        "device_id": pd.array([p.device_id for p in profiles], dtype=tables.ID_DTYPE),
    }
    columns.update(_recommendation_columns(profiles, rec_id=rec_id, top_n=top_n, items_as=items_as))
    if cohorts is not False:
        columns.update(_cohort_columns(profiles, cohorts=cohorts, names=names))
    if props is not False and props != ():
        columns.update(_property_columns(profiles, props=props, include_pii=include_pii, taken=columns))
    frame = pd.DataFrame(columns, copy=False)
    if include_pii:
        frame.attrs[PERSONAL_DATA_ATTR] = True
    return frame


def _chosen_set(profiles: Sequence[UserProfile], rec_id: str | None) -> str | None:
    """The recommendation set the table shows: ``rec_id``, or the only one the profiles have."""
    available = sorted({rec.rec_id for profile in profiles for rec in profile.recommendations or ()})
    if rec_id is None:
        if len(available) > 1:
            raise ValueError(
                f"these profiles have {len(available)} recommendation sets "
                f"({', '.join(available)}); choose one with rec_id=..."
            )
        return available[0] if available else None
    if rec_id not in available:
        raise ValueError(
            f"no profile has the recommendation set {rec_id!r}; available: "
            f"{', '.join(available) if available else 'none (were recommendations asked for?)'}"
        )
    return rec_id


def _recommendation_columns(
    profiles: Sequence[UserProfile], *, rec_id: str | None, top_n: int, items_as: str,
) -> dict[str, Any]:
    """Step 1: ``rec_id``, ``is_control``, ``recommendation_source`` and the items
    (``rec_1`` .. ``rec_{top_n}``, or one ``rec_items`` list) of the chosen set."""
    chosen = _chosen_set(profiles, rec_id)
    n = len(profiles)
    chosen_set = np.full(n, np.nan, dtype=object)
    control = pd.array([pd.NA] * n, dtype="boolean")
    source = np.full(n, np.nan, dtype=object)
    items = np.full((n, top_n), np.nan, dtype=object)
    lists = np.full(n, np.nan, dtype=object)
    if chosen is not None:
        for row, profile in enumerate(profiles):
            rec = profile.recommendation(chosen)
            if rec is None:
                continue
            chosen_set[row] = chosen
            control[row] = pd.NA if rec.is_control is None else rec.is_control
            source[row] = rec.recommendation_source
            top = rec.items[:top_n]
            items[row, :len(top)] = top
            lists[row] = list(top)
    columns: dict[str, Any] = {
        "rec_id": pd.array(chosen_set, dtype="str"),
        "is_control": control,
        "recommendation_source": pd.array(source, dtype="str"),
    }
    if items_as == "list":
        columns[REC_ITEMS_COLUMN] = lists
    else:
        for k in range(top_n):
            columns[f"rec_{k + 1}"] = pd.array(items[:, k].copy(), dtype="str")
    return columns


def _cohort_columns(
    profiles: Sequence[UserProfile], *, cohorts: bool | Sequence[str], names: CohortNamesLike,
) -> dict[str, Any]:
    """Step 2: one ``cohort:<id or name>`` flag per cohort (all seen, natural order; or the ones asked, in order)."""
    chosen = None if isinstance(cohorts, bool) else list(cohorts)
    matrix = tables.cohort_matrix(profiles, cohorts=chosen, names=names)
    headings = [str(name) for name in matrix.columns[2:]]
    if chosen is None:
        headings.sort(key=_natural_key)
    return {f"cohort:{heading}": matrix[heading].array for heading in headings}


def _property_columns(
    profiles: Sequence[UserProfile], *, props: bool | Sequence[str], include_pii: bool, taken: Iterable[str],
) -> dict[str, Any]:
    """Step 3: the chosen properties, typed as :func:`amptools.tables.properties` types them.

    A property named like one of the ``taken`` columns (or any name the table reserves)
    lands in ``prop:<name>``, with one :class:`PropertyRenamedWarning` for them all.
    Personal data is refused by name, or left out of ``props=True``, unless ``include_pii``.
    """
    table = tables.properties(profiles)
    present = [str(c) for c in table.columns[2:]]
    wanted: list[tuple[str, str]] = []  # (name asked, column of the properties table)
    if isinstance(props, bool):
        wanted = [(name, name) for name in present if props and (include_pii or not _is_pii(name, table[name]))]
    else:
        for name in [props] if isinstance(props, str) else list(props):
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
            wanted.append((name, column))
    used = set(taken)
    columns: dict[str, Any] = {}
    renamed: list[str] = []
    for name, source in wanted:
        column = _column_for_property(name, used)
        if column != name:
            renamed.append(f"{name} -> {column}")
        used.add(column)
        columns[column] = table[source].array
    if renamed:
        warn(
            f"{len(renamed)} propert{'y' if len(renamed) == 1 else 'ies'} named like the marketing "
            f"table's own columns kept under a prop: prefix: {', '.join(renamed)}.",
            PropertyRenamedWarning,
        )
    return columns


def _is_pii(name: str, column: pd.Series) -> bool:
    if is_personal_data_name(name):
        return True
    if column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
        return _looks_like_email(column.dropna().tolist())
    return False
