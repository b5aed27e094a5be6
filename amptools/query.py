"""What to ask the Profile API for: :class:`ProfileQuery` and id validation.

A query is immutable and hashable, validates itself on construction (so a bad
option is refused before any request is made) and has a canonical string form
that serves as a cache key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal
from urllib.parse import quote

from .errors import InvalidQueryError
from .ids import ID_TYPES, IdType, validate_id

__all__ = ["ID_TYPES", "ORG_REQUESTS_PER_MINUTE", "PROPENSITY_TYPES", "REC_TYPES", "STATUSES", "IdType",
           "ProfileQuery", "Status", "encode_params", "validate_id"]

# The vocabulary every stage shares, defined at the start of the data flow (the ids
# themselves in ids.py, the first module of it).
Status = Literal["ok", "not_found", "failed"]
#: How each id of a bulk fetch ends (``ok + not_found + failed == unique ids``).
STATUSES: tuple[Status, Status, Status] = ("ok", "not_found", "failed")
#: The Profile API requests an org may make a minute, all tools together (PROFILE_API.md).
ORG_REQUESTS_PER_MINUTE = 600
PROPENSITY_TYPES = ("score", "pct")
# The documented rec_type values; the service may add others, so any plain token is
# let through (strict in what we send: no spaces, commas or punctuation).
REC_TYPES = ("model", "random")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")
_PROPENSITY_ALIASES = {"percentile": "pct", "probability": "score"}
# Words that mean "all" or "none" to a person but would be sent as a comp_id.
_NOT_COMPUTATION_IDS = {"all", "true", "false", "none", "*", "yes", "no"}


# The parameters whose value is a comma-joined list of ids.
_LIST_PARAMS = frozenset({"rec_id", "comp_id", "prediction_id"})


def encode_params(params: Mapping[str, str]) -> str:
    """The query string of ``params``: every value percent-encoded, except the commas
    that join the ids of a list parameter (``rec_id``, ``comp_id``, ``prediction_id``).

    Single ids (``user_id``, ``device_id``) are encoded whole, commas included, so an
    id with a comma cannot be mistaken for two.
    """
    pieces = []
    for name, value in params.items():
        if name in _LIST_PARAMS:
            encoded = ",".join(quote(part, safe="") for part in value.split(","))
        else:
            encoded = quote(value, safe="")
        pieces.append(f"{name}={encoded}")
    return "&".join(pieces)


def _id_list(value: Any, name: str) -> tuple[str, ...]:
    """Normalise one id or an iterable of ids into a de-duplicated tuple."""
    if value is None or value is False:
        return ()
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidQueryError(
            f"{name} is a byte string; pass text (decode it first, e.g. value.decode('utf-8')).")
    if isinstance(value, str):
        items: Iterable[Any] = (value,)
    elif isinstance(value, Iterable):
        items = value
    else:
        raise InvalidQueryError(f"{name} must be a string or a list of strings, got {value!r}.")
    out: list[str] = []
    for item in items:
        item = validate_id(item, name)
        if "," in item:
            raise InvalidQueryError(
                f"{name} {item!r} contains a comma: the API joins several ids with commas, "
                "so this id cannot be asked for. Check the id (a pasted list?) or pass "
                "the ids as a Python list."
            )
        if item not in out:
            out.append(item)
    return tuple(out)


def _object_asked(part: ProfileQuery) -> str:
    """What one request's ``amp_props`` object holds: nothing, properties, computations, or
    both merged."""
    if part.amp_props:
        return "merged" if part.asks_computations else "properties"
    return "computations" if part.asks_computations else "nothing"


@dataclass(frozen=True)
class ProfileQuery:
    """What to fetch for each user.

    Parameters
    ----------
    recs : str or sequence of str
        Recommendation ids to return (``get_recs=true&rec_id=a,b``). Empty: none.
    rec_type : str, optional
        Override the experiment's control setting: ``"model"`` or ``"random"``.
    amp_props : bool
        Return the user's properties (not including computations).
    cohort_ids : bool
        Return the ids of the tracked cohorts the user is in.
    computations : bool or sequence of str
        ``True`` for every computation, or a list of computation ids.
    predictions : str or sequence of str
        Prediction ids whose propensity to return.
    propensity_type : {"score", "pct"}
        Raw probability (0–1) or percentile (0–100).
    split_computations : bool
        The API returns computations merged into ``amp_props``. By default (False)
        amptools sends **one** request per user and tells computations apart by
        their names: the listed ``comp_id`` values, or — for all computations — the
        org's computation names, learned once per org (see :mod:`amptools.bulk`).
        A property that has the same name as a computation cannot be told apart in
        a merged answer; ``tables.computations`` flags those rows (``ambiguous``).
        ``True`` sends two requests per user when both are asked (one without
        computations, one with only them), which keeps them apart exactly at twice
        the cost of the org's quota.
    """

    recs: tuple[str, ...] = ()
    rec_type: str | None = None
    amp_props: bool = False
    cohort_ids: bool = False
    computations: bool | tuple[str, ...] = False
    predictions: tuple[str, ...] = ()
    propensity_type: str = "score"
    split_computations: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "recs", _id_list(self.recs, "rec_id"))
        for name in ("amp_props", "cohort_ids", "split_computations"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise InvalidQueryError(f"{name} must be True or False, got {value!r}.")
        computations = self.computations
        if isinstance(computations, str) and computations.strip().lower() in _NOT_COMPUTATION_IDS:
            raise InvalidQueryError(
                f"computations={computations!r} would be sent as a computation id; pass True "
                "for every computation, False for none, or a list of computation ids.")
        if not isinstance(computations, bool):
            computations = _id_list(computations, "comp_id")
            if not computations:
                raise InvalidQueryError(
                    "computations is an empty list: pass True for all computations, "
                    "False for none, or a list of computation ids."
                )
        set_(self, "computations", computations)
        set_(self, "predictions", _id_list(self.predictions, "prediction_id"))

        rec_type = self.rec_type
        if rec_type is not None:
            if not isinstance(rec_type, str) or not _TOKEN.match(rec_type):
                raise InvalidQueryError(
                    f"rec_type {rec_type!r} is not valid; use one of {', '.join(REC_TYPES)} "
                    "(or None to keep the experiment's own control setting)."
                )
            if not self.recs:
                raise InvalidQueryError(
                    "rec_type is set but no recommendation ids are asked for: "
                    "add recs=('your-rec-id',) or drop rec_type."
                )
        ptype = self.propensity_type
        ptype = _PROPENSITY_ALIASES.get(ptype, ptype) if isinstance(ptype, str) else ptype
        if ptype not in PROPENSITY_TYPES:
            raise InvalidQueryError(
                f"propensity_type {self.propensity_type!r} is unknown; use 'score' "
                "(probability 0–1) or 'pct' (percentile 0–100)."
            )
        set_(self, "propensity_type", ptype)

    # -- what is asked ---------------------------------------------------------
    @property
    def asks_recommendations(self) -> bool:
        return bool(self.recs)

    @property
    def asks_computations(self) -> bool:
        return self.computations is not False

    @property
    def asks_propensities(self) -> bool:
        return bool(self.predictions)

    @property
    def computation_ids(self) -> tuple[str, ...] | None:
        """The computation ids asked for, or None for "all" or "none"."""
        return self.computations if isinstance(self.computations, tuple) else None

    # -- what is sent ----------------------------------------------------------
    def to_params(self) -> dict[str, str]:
        """The query-string parameters for this query, without the user's id.

        Only what is asked for is sent; booleans are the lowercase word ``true``
        and lists are joined with commas (each id URL-encoded by the client).
        """
        params: dict[str, str] = {}
        if self.recs:
            params["get_recs"] = "true"
            params["rec_id"] = ",".join(self.recs)
            if self.rec_type is not None:
                params["rec_type"] = self.rec_type
        if self.amp_props:
            params["get_amp_props"] = "true"
        if self.cohort_ids:
            params["get_cohort_ids"] = "true"
        if self.computations is True:
            params["get_computations"] = "true"
        elif self.computations:
            params["comp_id"] = ",".join(self.computations)
        if self.predictions:
            params["get_propensity"] = "true"
            params["prediction_id"] = ",".join(self.predictions)
            params["propensity_type"] = self.propensity_type
        return params

    @property
    def merges_computations(self) -> bool:
        """Properties and computations are asked in one request (computations told apart by name)."""
        return self.amp_props and self.asks_computations and not self.split_computations

    @property
    def needs_computation_names(self) -> bool:
        """One merged request for properties and *all* computations: which keys are
        computations can only be known from the org's computation names."""
        return self.merges_computations and self.computations is True

    def split(self) -> ProfileQuery:
        """The same query asked the two-request way (see ``split_computations``)."""
        return replace(self, split_computations=True)

    def parts(self) -> tuple[ProfileQuery, ...]:
        """The requests one user needs: one, or two when computations must stay apart."""
        if self.split_computations and self.amp_props and self.asks_computations:
            main = replace(self, computations=False)
            only_computations = ProfileQuery(computations=self.computations, split_computations=True)
            return (main, only_computations)
        return (self,)

    def covers(self, narrower: ProfileQuery) -> bool:
        """Whether an answer to this request holds all of ``narrower``'s answer (both
        single requests, as :meth:`parts` gives them): a cached answer to a wider query
        answers a narrower one, with no request and no exposure event.

        Recommendations, cohorts and predictions narrow by subset. Properties and
        computations narrow only where no name is needed to tell them apart: properties
        alone from properties alone, computations alone (listed ones from all or from
        more), and a merged object only from the same merged object.
        """
        if narrower.recs and (not set(narrower.recs) <= set(self.recs) or narrower.rec_type != self.rec_type):
            return False
        if narrower.cohort_ids and not self.cohort_ids:
            return False
        if narrower.predictions and (not set(narrower.predictions) <= set(self.predictions)
                                     or narrower.propensity_type != self.propensity_type):
            return False
        wide, narrow = _object_asked(self), _object_asked(narrower)
        if narrow == "nothing":
            return True
        if narrow == "merged":
            return wide == "merged" and self.computations == narrower.computations
        if narrow == "properties":
            return wide == "properties"
        return wide == "computations" and (self.computations is True or (
            narrower.computations is not True and set(narrower.computations or ()) <= set(self.computations or ())))

    # -- identity --------------------------------------------------------------
    def canonical(self) -> str:
        """A stable text form: equal queries give equal strings (the cache key)."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        if not (self.amp_props and self.asks_computations):
            # The flag changes nothing here. It is written as older amptools wrote every
            # key (when splitting was the default), so their cache entries still match.
            data["split_computations"] = True
        return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_options(cls, query: ProfileQuery | None = None, **options: Any) -> ProfileQuery:
        """Build a query from keyword shorthand, or extend ``query`` with it."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise InvalidQueryError(
                f"unknown query option(s) {', '.join(unknown)}; "
                f"valid options are {', '.join(sorted(names))}."
            )
        if query is None:
            return cls(**options)
        if not isinstance(query, ProfileQuery):
            raise InvalidQueryError(f"query must be a ProfileQuery, got {type(query).__name__}.")
        return replace(query, **options) if options else query
