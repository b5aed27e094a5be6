"""Profiles saved over time: snapshots in a Parquet dataset, and loading them back.

Amplitude keeps only the current profile; a fetch is a snapshot of the org at one
moment. :func:`save` keeps it in a *store*, a folder that is a plain Parquet dataset
(hive-partitioned by snapshot) which pandas, DuckDB, Spark or BigQuery read as it is::

    store/
      manifest/snapshot=<id>/part-0.parquet         one row: taken_at, label, org, query, counts
      raw/snapshot=<id>/part-0.parquet              one row per id asked: outcome and the raw answers
      recommendations/snapshot=<id>/part-0.parquet  the tidy tables of amptools.tables
      cohorts/snapshot=<id>/part-0.parquet
      computations/snapshot=<id>/part-0.parquet

- **Nothing lost**: the raw answers (JSON text, exactly as answered) are kept beside the
  tidy tables, so every table (and the :class:`~amptools.bulk.ProfileSet`) can be rebuilt;
  the tidy tables are kept so that comparisons need no JSON parsing.
- **Whole or not at all**: a snapshot is written into ``store/_staging`` first and moved
  into place table by table with its manifest row last, under a lock; a failure moves
  back what was moved. A snapshot exists when its manifest row does; :func:`save`
  removes what a killed writer left behind.
- **Never mixed**: the manifest names the org (the client's scope: base URL and a
  fingerprint of the key — never the key) and the query; snapshots of one org, query
  and id type form a *series* (``list(store)["series"]``), and comparisons refuse to
  mix two series.

See ``docs/snapshots.md``.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import tables
from .errors import AmptoolsError, InvalidQueryError
from .frames import LIST_COLUMNS
from .models import ComputationNames
from .query import ProfileQuery

if TYPE_CHECKING:
    from .bulk import Outcome, ProfileSet

__all__ = [
    "MANIFEST_COLUMNS",
    "RAW_COLUMNS",
    "STORED_TABLES",
    "Snapshot",
    "SnapshotError",
    "drift_history",
    "list",
    "load",
    "pair",
    "save",
]

#: The tidy tables a snapshot keeps beside its raw answers.
STORED_TABLES: tuple[str, ...] = ("recommendations", "cohorts", "computations")
#: Columns of :func:`list` (one row per snapshot, oldest first); the manifest's own.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "snapshot", "taken_at", "label", "series", "org", "query", "id_type",
    "n_ids", "n_ok", "n_not_found", "n_failed",
    "n_recommendations", "n_cohorts", "n_computations", "amptools_version",
)
#: Columns of the raw table: one row per id asked.
RAW_COLUMNS: tuple[str, ...] = (
    "id", "user_id", "device_id", "status", "http_status", "attempts", "error", "from_cache",
    "body", "body_computations", "computation_keys", "property_keys",
)
_MANIFEST = "manifest"
_RAW = "raw"
_STAGING = "_staging"
_LOCK = ".amptools-store.lock"
_PART = "part-0.parquet"


class SnapshotError(AmptoolsError, ValueError):
    """A store or snapshot cannot be read or written as asked (the message says why and what to do)."""


def _arrow() -> tuple[Any, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa, pq


# ---------------------------------------------------------------------------- the store on disk
def _store_path(store: str | os.PathLike[str], *, must_exist: bool) -> Path:
    if isinstance(store, (bytes, bytearray)) or not isinstance(store, (str, os.PathLike)):
        raise TypeError(f"store must be a folder path, got {type(store).__name__}")
    path = Path(store).expanduser()
    if path.exists() and not path.is_dir():
        raise SnapshotError(f"the store {str(path)!r} is a file; a store is a folder (it is created when needed).")
    if must_exist and not (path / _MANIFEST).is_dir():
        raise SnapshotError(f"no snapshots in {str(path)!r}: save one first (amptools.snapshots.save(profiles, store)).")
    return path


def _partition(path: Path, table: str, snapshot: str) -> Path:
    return path / table / f"snapshot={snapshot}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time per store (a lock file; POSIX only, elsewhere no lock)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: saves to one store must not overlap
        yield
        return
    with open(path / _LOCK, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _snapshot_ids(path: Path) -> builtins.list[str]:
    """The committed snapshots: those with a manifest partition."""
    folder = path / _MANIFEST
    if not folder.is_dir():
        return []
    return sorted(p.name.split("=", 1)[1] for p in folder.glob("snapshot=*") if (p / _PART).is_file())


def _clean(path: Path) -> None:
    """Remove what a killed writer left: staging folders and partitions without a manifest row."""
    shutil.rmtree(path / _STAGING, ignore_errors=True)
    committed = set(_snapshot_ids(path))
    for table in (_RAW, *STORED_TABLES):
        for partition in (path / table).glob("snapshot=*"):
            if partition.name.split("=", 1)[1] not in committed:
                shutil.rmtree(partition, ignore_errors=True)


# ---------------------------------------------------------------------------- saving
def _taken_at(value: Any) -> pd.Timestamp:
    if value is None:
        return pd.Timestamp(datetime.now(timezone.utc)).as_unit("us")
    try:
        moment = pd.Timestamp(value)
    except (TypeError, ValueError) as error:
        raise InvalidQueryError(f"taken_at must be a datetime or an ISO 8601 text, got {value!r} ({error}).") from None
    if moment is pd.NaT:
        raise InvalidQueryError("taken_at is missing (NaT): give a datetime, or leave it out for now.")
    moment = moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")
    return moment.as_unit("us")


def _json_text(payload: Any) -> str:
    """A body as JSON text; text UTF-8 cannot encode (a lone surrogate) is kept as its escape."""
    import msgspec

    try:
        return msgspec.json.encode(payload).decode("utf-8")
    except (UnicodeEncodeError, TypeError, OverflowError):
        return json.dumps(payload, ensure_ascii=True, separators=(",", ":"))


def _outcomes(data: Any) -> tuple[builtins.list[Outcome], ProfileQuery | None, str]:
    """The outcomes to keep, the query and the id type of what :func:`save` was given."""
    from .bulk import Outcome, ProfileSet

    if isinstance(data, ProfileSet):
        return [data.outcome(id_) for id_ in data.ids], data.query, data.id_type
    if isinstance(data, Snapshot):
        profiles = data.profiles
        return [profiles.outcome(id_) for id_ in profiles.ids], profiles.query, profiles.id_type
    profiles_list = tables.as_profiles(data)
    outcomes = [Outcome(str(p.id), "ok", 200, 1, None, False, p) for p in profiles_list]
    return outcomes, None, "user_id"


def _raw_table(outcomes: Sequence[Outcome], id_type: str, needs_names: bool) -> Any:
    pa, _ = _arrow()
    columns: dict[str, builtins.list[Any]] = {name: [] for name in RAW_COLUMNS}
    for outcome in outcomes:
        profile = outcome.profile
        columns["id"].append(outcome.id)
        columns["status"].append(outcome.status)
        columns["http_status"].append(outcome.http_status)
        columns["attempts"].append(outcome.attempts)
        columns["error"].append(outcome.error)
        columns["from_cache"].append(outcome.from_cache)
        if profile is None:
            columns["user_id"].append(outcome.id if id_type == "user_id" else None)
            columns["device_id"].append(outcome.id if id_type == "device_id" else None)
            for name in ("body", "body_computations", "computation_keys", "property_keys"):
                columns[name].append(None)
            continue
        columns["user_id"].append(profile.user_id)
        columns["device_id"].append(profile.device_id)
        columns["body"].append(_json_text(profile.raw))
        columns["body_computations"].append(
            None if profile.raw_computations is None else _json_text(profile.raw_computations))
        # A merged answer (properties and computations in one object) is read with the org's
        # names: keep what each key was taken for (both lists hold an ambiguous key; neither
        # an unverified one), so the answer is read back exactly as it was.
        kinds = profile.key_kinds if needs_names else {}
        columns["computation_keys"].append(
            sorted(k for k, kind in kinds.items() if kind in ("computation", "ambiguous")) if kinds else None)
        columns["property_keys"].append(
            sorted(k for k, kind in kinds.items() if kind in ("property", "ambiguous")) if kinds else None)
    text, texts = pa.large_string(), pa.list_(pa.large_string())
    schema = pa.schema([
        ("id", text), ("user_id", text), ("device_id", text), ("status", text),
        ("http_status", pa.int32()), ("attempts", pa.int32()), ("error", text), ("from_cache", pa.bool_()),
        ("body", text), ("body_computations", text), ("computation_keys", texts), ("property_keys", texts),
    ])
    return pa.Table.from_arrays([_arrow_array(columns[name], schema.field(name).type) for name in RAW_COLUMNS],
                                schema=schema)


def _arrow_array(values: builtins.list[Any], kind: Any) -> Any:
    """``pa.array``; text Arrow cannot hold (a lone surrogate in an id or an error) becomes U+FFFD.

    The answers themselves are JSON text that keeps such a character as its escape.
    """
    pa, _ = _arrow()
    try:
        return pa.array(values, type=kind)
    except UnicodeEncodeError:
        def clean(value: Any) -> Any:
            if isinstance(value, str):
                return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            if isinstance(value, builtins.list):
                return [clean(item) for item in value]
            return value

        return pa.array([clean(value) for value in values], type=kind)


def _series(org: str, query: str, id_type: str) -> str:
    """A short name for one org, query and id type: snapshots comparable with each other."""
    return hashlib.sha256(f"{org}\x00{query}\x00{id_type}".encode("utf-8")).hexdigest()[:12]


def _org_of(data: Any, org: Any) -> str:
    if org is None:
        org = getattr(data, "scope", None) or getattr(getattr(data, "profiles", None), "scope", None)
    if org is None:
        return ""
    scope = getattr(org, "scope", org)  # a client, or its scope text
    if not isinstance(scope, str):
        raise TypeError(f"org must be a ProfileClient or its scope text, got {type(org).__name__}")
    return scope


def save(
    profiles: Any,
    store: str | os.PathLike[str],
    *,
    taken_at: datetime | str | None = None,
    label: str | None = None,
    org: Any = None,
) -> str:
    """Keep one snapshot of ``profiles`` in ``store``, whole or not at all.

    Parameters
    ----------
    profiles : ProfileSet, list of UserProfile or list of response dicts
        What was fetched. A ``ProfileSet`` keeps every id's outcome (``not_found`` and
        ``failed`` too) and its query and org; plain profiles are kept as ``ok`` answers.
    store : str or path
        The store's folder (created when needed).
    taken_at : datetime or ISO 8601 text, optional
        When the profiles were true; now by default. Naive times are taken as UTC.
    label : str, optional
        A name to find the snapshot by (``"before retrain"``).
    org : ProfileClient or str, optional
        Who answered: a client or its ``scope``. By default the ``ProfileSet``'s own.
        Only a fingerprint of the key is ever written.

    Returns
    -------
    str
        The snapshot's id (``20240612T060000Z-3fa2c1``): sortable by time, unique.

    Raises
    ------
    SnapshotError
        When the store is a file.
    OSError
        When writing fails; the store is then as it was.
    """
    if label is not None and not isinstance(label, str):
        raise TypeError(f"label must be text, got {type(label).__name__}")
    path = _store_path(store, must_exist=False)
    moment = _taken_at(taken_at)
    outcomes, query, id_type = _outcomes(profiles)
    scope = _org_of(profiles, org)
    query_text = query.canonical() if query is not None else ""
    snapshot = f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    kept = [o.profile for o in outcomes if o.profile is not None]
    built = {name: getattr(tables, name)(kept) for name in STORED_TABLES}
    raw = _raw_table(outcomes, id_type, query is not None and query.merges_computations)
    statuses = pd.Series([o.status for o in outcomes], dtype=object).value_counts()
    from . import __version__

    manifest = pd.DataFrame([{
        "snapshot": snapshot, "taken_at": moment, "label": label, "series": _series(scope, query_text, id_type),
        "org": scope, "query": query_text, "id_type": id_type, "n_ids": len(outcomes),
        "n_ok": int(statuses.get("ok", 0)), "n_not_found": int(statuses.get("not_found", 0)),
        "n_failed": int(statuses.get("failed", 0)),
        "n_recommendations": len(built["recommendations"]), "n_cohorts": len(built["cohorts"]),
        "n_computations": len(built["computations"]), "amptools_version": __version__,
    }], columns=builtins.list(MANIFEST_COLUMNS)).astype(_MANIFEST_DTYPES)
    pa, pq = _arrow()
    with _locked(path):
        _clean(path)
        staging = path / _STAGING / snapshot
        moved: builtins.list[Path] = []
        try:
            files = {_RAW: raw, **{name: pa.Table.from_pandas(frame, preserve_index=False)
                                   for name, frame in built.items()},
                     # the snapshot's id is its partition's name, as in every table
                     _MANIFEST: pa.Table.from_pandas(manifest.drop(columns="snapshot"), preserve_index=False)}
            for name, table in files.items():
                (staging / name).mkdir(parents=True)
                pq.write_table(table, staging / name / _PART, compression="zstd")
            for name in files:  # the manifest last: it commits the snapshot
                target = _partition(path, name, snapshot)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, target)
                moved.append(target)
        except BaseException:
            for target in reversed(moved):
                shutil.rmtree(target, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(path / _STAGING, ignore_errors=True)
    return snapshot


_MANIFEST_DTYPES: dict[str, Any] = {
    "snapshot": "str", "taken_at": tables.TIMESTAMP_DTYPE, "label": "str", "series": "str", "org": "str",
    "query": "str", "id_type": "str", "n_ids": "int64", "n_ok": "int64", "n_not_found": "int64",
    "n_failed": "int64", "n_recommendations": "int64", "n_cohorts": "int64", "n_computations": "int64",
    "amptools_version": "str",
}


# ---------------------------------------------------------------------------- listing and loading
def list(store: str | os.PathLike[str]) -> pd.DataFrame:  # noqa: A001 - the contract's name
    """The snapshots of a store, oldest first.

    Parameters
    ----------
    store : str or path
        The store's folder.

    Returns
    -------
    DataFrame
        One row per snapshot, :data:`MANIFEST_COLUMNS`: ``snapshot`` (its id),
        ``taken_at`` (UTC), ``label``, ``series`` (snapshots of one org, query and id
        type share it), ``org`` (base URL and key fingerprint), ``query`` (the
        canonical query text), ``id_type``, the counts of ids and outcomes (``n_ids``,
        ``n_ok``, ``n_not_found``, ``n_failed``) and of table rows, and the amptools
        version that wrote it. Empty (with these columns) for a store with none.
    """
    path = _store_path(store, must_exist=False)
    ids = _snapshot_ids(path)
    if not ids:
        return pd.DataFrame({c: pd.Series(dtype=d) for c, d in _MANIFEST_DTYPES.items()})[builtins.list(MANIFEST_COLUMNS)]
    _, pq = _arrow()
    frames = [pq.read_table(_partition(path, _MANIFEST, snapshot) / _PART).to_pandas().assign(snapshot=snapshot)
              for snapshot in ids]
    frame = pd.concat(frames, ignore_index=True)[builtins.list(MANIFEST_COLUMNS)].astype(_MANIFEST_DTYPES)
    return frame.sort_values(["taken_at", "snapshot"], kind="stable").reset_index(drop=True)


def _resolve(listing: pd.DataFrame, snapshot: str | int | pd.Timestamp, store: Any) -> pd.Series:
    """One manifest row: by id, by label, or by position (0 oldest, -1 newest)."""
    if listing.empty:
        raise SnapshotError(f"no snapshots in {str(store)!r}: save one first.")
    if isinstance(snapshot, (int, np.integer)) and not isinstance(snapshot, bool):
        if not -len(listing) <= snapshot < len(listing):
            raise SnapshotError(f"snapshot {snapshot} is out of range: the store holds {len(listing)} "
                                f"(0 is the oldest, -1 the newest).")
        row: pd.Series = listing.iloc[int(snapshot)]
        return row
    if isinstance(snapshot, str):
        for column in ("snapshot", "label"):
            found = listing[listing[column] == snapshot]
            if len(found) == 1:
                return found.iloc[0]
            if len(found) > 1:
                raise SnapshotError(f"{len(found)} snapshots are labelled {snapshot!r}: give the snapshot "
                                    f"id instead ({', '.join(found['snapshot'])}).")
        raise SnapshotError(f"no snapshot {snapshot!r} in {str(store)!r}: give an id or label of "
                            f"amptools.snapshots.list(store), or a position (-1 is the newest).")
    raise TypeError(f"snapshot must be an id, a label or a position, got {type(snapshot).__name__}")


class Snapshot:
    """One snapshot loaded from a store: its manifest, its tables, its profiles.

    Attributes
    ----------
    id, label, taken_at, series, org, query, id_type
        From the manifest (``query`` as a :class:`~amptools.query.ProfileQuery`, None
        for profiles saved without one).
    info : dict
        The whole manifest row.
    recommendations, cohorts, computations : DataFrame
        The stored tidy tables, exactly as :mod:`amptools.tables` made them.
    users : DataFrame
        ``user_id``, ``device_id`` of the users whose answer came back.
    properties : DataFrame
        The properties table, rebuilt from the raw answers (see :meth:`table`).
    raw : DataFrame
        One row per id asked (:data:`RAW_COLUMNS`): its outcome and raw answers.
    """

    def __init__(self, path: Path, info: Mapping[str, Any]) -> None:
        self.path = path
        self.info: dict[str, Any] = dict(info)
        self.id: str = str(info["snapshot"])
        label = info.get("label")
        self.label: str | None = None if label is None or pd.isna(label) else str(label)
        self.taken_at: pd.Timestamp = pd.Timestamp(info["taken_at"])
        self.series: str = str(info["series"])
        self.org: str = str(info["org"])
        self.id_type: str = str(info["id_type"])
        query = str(info["query"])
        self.query: ProfileQuery | None = ProfileQuery(**json.loads(query)) if query else None
        self._tables: dict[str, pd.DataFrame] = {}
        self._profiles: ProfileSet | None = None

    def __repr__(self) -> str:
        label = f" {self.label!r}" if self.label else ""
        return (f"<Snapshot {self.id}{label} taken {self.taken_at:%Y-%m-%d %H:%M} UTC: "
                f"{self.info['n_ok']:,} ok of {self.info['n_ids']:,} ids>")

    def _read(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            _, pq = _arrow()
            self._tables[name] = pq.read_table(_partition(self.path, name, self.id) / _PART).to_pandas()
        return self._tables[name]

    @property
    def recommendations(self) -> pd.DataFrame:
        return self._read("recommendations")

    @property
    def cohorts(self) -> pd.DataFrame:
        return self._read("cohorts")

    @property
    def computations(self) -> pd.DataFrame:
        return self._read("computations")

    @property
    def raw(self) -> pd.DataFrame:
        return self._read(_RAW)

    @property
    def users(self) -> pd.DataFrame:
        """``user_id`` and ``device_id`` of every user whose answer came back (status ``ok``)."""
        raw = self.raw
        ok = raw[raw["status"] == "ok"]
        return ok[["user_id", "device_id"]].astype({"user_id": "str", "device_id": "str"}).reset_index(drop=True)

    @property
    def profiles(self) -> ProfileSet:
        """The :class:`~amptools.bulk.ProfileSet` rebuilt from the raw answers (every outcome)."""
        if self._profiles is None:
            self._profiles = _profile_set(self.raw, self.query, self.id_type)
            self._profiles.scope = self.org or None
        return self._profiles

    @property
    def properties(self) -> pd.DataFrame:
        """:func:`amptools.tables.properties`, rebuilt from the raw answers (fast: no profile objects)."""
        return self.table("properties")

    def table(self, name: str) -> pd.DataFrame:
        """Any table of :mod:`amptools.tables` by name: stored, rebuilt fast from the answers, or from :attr:`profiles`.

        ``recommendations``, ``cohorts``, ``computations`` are read as stored;
        ``properties`` is rebuilt from the raw answers by :func:`amptools.reading.read_tables`;
        ``summary``, ``propensities``, ``cohort_matrix`` from :attr:`profiles` (the
        summary lists every outcome, failures included).
        """
        if name in STORED_TABLES:
            return self._read(name)
        if name == "properties":
            from .reading import read_tables

            if "properties" not in self._tables:
                _, bodies, seconds, names = _answers(self.raw)
                self._tables["properties"] = read_tables(bodies, query=self.query, computation_bodies=seconds,
                                                         names=names, which=["properties"])["properties"]
            return self._tables["properties"]
        if name not in tables.__all__ or not callable(getattr(tables, name)) or name in ("as_profiles",):
            raise KeyError(f"unknown table {name!r}; tables are {', '.join(STORED_TABLES)}, properties, "
                           "propensities, summary, cohort_matrix.")
        frame: pd.DataFrame = getattr(tables, name)(self.profiles)
        return frame


def _answers(raw: pd.DataFrame) -> tuple[pd.DataFrame, builtins.list[str], builtins.list[str | None],
                                         builtins.list[ComputationNames | None]]:
    """The rows with answers, their bodies, second bodies and the names they were read with."""
    answered = raw[raw["body"].notna()]
    bodies = answered["body"].astype(str).tolist()
    seconds = [None if pd.isna(text) else str(text) for text in answered["body_computations"].tolist()]
    names: builtins.list[ComputationNames | None] = [
        None if keys is None or isinstance(keys, float) else ComputationNames(
            frozenset(keys), frozenset(props), dict.fromkeys([*keys, *props], "as read when the snapshot was saved"))
        for keys, props in zip(answered["computation_keys"].tolist(), answered["property_keys"].tolist())]
    return answered, bodies, seconds, names


def _profile_set(raw: pd.DataFrame, query: ProfileQuery | None, id_type: str) -> ProfileSet:
    from .bulk import Outcome, ProfileSet
    from .reading import read_profiles

    answered, bodies, seconds, names = _answers(raw)
    parsed = dict(zip(answered.index, read_profiles(bodies, query=query, computation_bodies=seconds, names=names)))
    outcomes = []
    for index, row in zip(raw.index, raw.itertuples(index=False)):
        http_status = None if pd.isna(row.http_status) else int(row.http_status)
        error = None if pd.isna(row.error) else str(row.error)
        outcomes.append(Outcome(str(row.id), str(row.status), http_status, int(row.attempts), error,
                                bool(row.from_cache), parsed.get(index)))
    return ProfileSet(outcomes, query=query or ProfileQuery(), id_type=id_type, scope=None)


def load(store: str | os.PathLike[str], snapshot: str | int = -1) -> Snapshot:
    """Load one snapshot: its manifest, tables and (on first use) its profiles.

    Parameters
    ----------
    store : str or path
        The store's folder.
    snapshot : str or int, default -1
        The snapshot's id, its label, or its position in :func:`list` (0 the oldest,
        -1 the newest).

    Returns
    -------
    Snapshot
        ``.recommendations``, ``.cohorts``, ``.computations`` (the stored tables),
        ``.profiles`` (a ProfileSet rebuilt from the raw answers), ``.raw``, ``.info``.

    Raises
    ------
    SnapshotError
        When the store holds no such snapshot (the message says how to name one).
    """
    path = _store_path(store, must_exist=True)
    return Snapshot(path, _resolve(list(path), snapshot, store).to_dict())


def pair(
    store: str | os.PathLike[str],
    before: str | int | None = None,
    after: str | int | None = None,
) -> tuple[Snapshot, Snapshot]:
    """Two snapshots of one series to compare: by default the newest and the one before it.

    Parameters
    ----------
    store : str or path
        The store's folder.
    before, after : str or int, optional
        Ids, labels or positions (see :func:`load`). ``after`` defaults to the newest
        snapshot, ``before`` to the one before ``after`` in the same series.

    Returns
    -------
    (Snapshot, Snapshot)

    Raises
    ------
    SnapshotError
        When the two are of different orgs, queries or id types (never mixed), or the
        series has a single snapshot.
    """
    path = _store_path(store, must_exist=True)
    listing = list(path)
    last = _resolve(listing, after if after is not None else -1, store)
    if before is None:
        earlier = listing[(listing["series"] == last["series"]) & (listing["taken_at"] <= last["taken_at"])
                          & (listing["snapshot"] != last["snapshot"])]
        if earlier.empty:
            raise SnapshotError(f"snapshot {last['snapshot']} is the first of its series (same org and query): "
                                "save another, or name --from/before= explicitly.")
        first = earlier.iloc[-1]
    else:
        first = _resolve(listing, before, store)
    if first["series"] != last["series"]:
        what = "org" if first["org"] != last["org"] else "query" if first["query"] != last["query"] else "id type"
        raise SnapshotError(f"snapshots {first['snapshot']} and {last['snapshot']} are of a different {what}: "
                            "only snapshots of one org, query and id type are compared (see the series column "
                            "of amptools.snapshots.list(store)).")
    return Snapshot(path, first.to_dict()), Snapshot(path, last.to_dict())


def drift_history(
    store: str | os.PathLike[str],
    *,
    series: str | None = None,
    by: str = "rec_id",
    k: int | None = None,
    p: float = 0.9,
) -> pd.DataFrame:
    """How much the recommendations changed from each snapshot to the next, per set.

    :func:`amptools.metrics.drift_summary` of every pair of consecutive snapshots of one
    series; what :func:`amptools.plots.drift_over_time` draws.

    Parameters
    ----------
    store : str or path
        The store's folder.
    series : str, optional
        The series (see :func:`list`); by default the newest snapshot's.
    by, k, p
        As :func:`amptools.metrics.drift_summary`.

    Returns
    -------
    DataFrame
        ``before``, ``after`` (snapshot ids), ``taken_at_before``, ``taken_at_after``,
        ``label_after``, then the columns of :func:`amptools.metrics.drift_summary`.
        Empty (with these columns) when the series has one snapshot.
    """
    from . import metrics

    path = _store_path(store, must_exist=True)
    listing = list(path)
    if series is None:
        series = str(listing["series"].iloc[-1])
    chosen = listing[listing["series"] == series].reset_index(drop=True)
    if chosen.empty:
        raise SnapshotError(f"no series {series!r} in {str(store)!r}: see the series column of "
                            "amptools.snapshots.list(store).")
    frames = []
    previous: Snapshot | None = None
    for info in chosen.to_dict("records"):
        current = Snapshot(path, info)
        if previous is not None:
            summary = metrics.drift_summary(previous.recommendations, current.recommendations, by=by, k=k, p=p)
            summary.insert(0, "label_after", pd.array([current.label] * len(summary), dtype="str"))
            summary.insert(0, "taken_at_after", pd.Series([current.taken_at] * len(summary), dtype=tables.TIMESTAMP_DTYPE))
            summary.insert(0, "taken_at_before", pd.Series([previous.taken_at] * len(summary), dtype=tables.TIMESTAMP_DTYPE))
            summary.insert(0, "after", pd.array([current.id] * len(summary), dtype="str"))
            summary.insert(0, "before", pd.array([previous.id] * len(summary), dtype="str"))
            frames.append(summary)
        previous = current
    if not frames:
        nothing = pd.DataFrame({name: pd.Series(dtype=object) for name in (*LIST_COLUMNS, by)})
        empty = metrics.drift_summary(nothing, nothing, by=by)
        for name, dtype in (("label_after", "str"), ("taken_at_after", tables.TIMESTAMP_DTYPE),
                            ("taken_at_before", tables.TIMESTAMP_DTYPE), ("after", "str"), ("before", "str")):
            empty.insert(0, name, pd.Series(dtype=dtype))
        return empty
    return pd.concat(frames, ignore_index=True)
