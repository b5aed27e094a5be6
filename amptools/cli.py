"""The ``amptools`` command line: fetch, report, preview, drift, demo, cohorts, sample-server.

It composes the library and holds no logic of its own beyond reading arguments and
files. Exit codes: 0 all fetched, 1 some users not fetched (failed or unknown to the
service; listed on stderr), 2 bad usage or input, 3 authentication failed.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from .errors import (
    AmptoolsError,
    AuthenticationError,
    BrazeImportError,
    CacheError,
    ConfigurationError,
    InvalidQueryError,
)
from .ids import parse_id_file
from .query import ID_TYPES, ORG_REQUESTS_PER_MINUTE, PROPENSITY_TYPES, STATUSES, ProfileQuery

if TYPE_CHECKING:
    from .bulk import ProfileSet

__all__ = ["main"]

EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_AUTH = 0, 1, 2, 3
TABLES = ("summary", "recommendations", "properties", "cohorts", "cohort_matrix",
          "computations", "propensities")
DEMO_USERS = 300
BRAZE_CSV, BRAZE_JSON = "braze_import.csv", "braze_track.jsonl"


class UsageError(Exception):
    """Bad arguments or input file; the message says what to do."""


# -- the parser ------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line (no usage block): what to fix."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.split(",") if part)


def _renames(value: str) -> dict[str, str]:
    """An argparse type: ``OLD=NEW[,OLD=NEW…]`` as a mapping of column names."""
    pairs: dict[str, str] = {}
    for part in _comma_list(value):
        old, equals, new = part.partition("=")
        if not equals or not old.strip() or not new.strip():
            raise argparse.ArgumentTypeError(f"expected OLD=NEW (e.g. country=country_name), got {part!r}")
        pairs[old.strip()] = new.strip()
    return pairs


def _whole(low: int, high: int | None = None) -> Any:
    """An argparse type: a whole number in [low, high]."""
    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if number < low or (high is not None and number > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {number}")
        return number
    return parse


def _seconds(text: str) -> float:
    """An argparse type: finite seconds ≥ 0 (refuses nan, inf and negatives)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(f"must be finite seconds ≥ 0, got {text!r}")
    return number


def _add_query_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("what to fetch (mirrors ProfileQuery)")
    group.add_argument("--recs", type=_comma_list, default=(), metavar="ID[,ID…]",
                       help="recommendation ids to return (logs exposure events in Amplitude)")
    group.add_argument("--rec-type", choices=("model", "random"),
                       help="override the experiment's control setting")
    group.add_argument("--props", action="store_true", help="return user properties")
    group.add_argument("--cohorts", action="store_true", help="return tracked cohort ids")
    group.add_argument("--computations", nargs="?", const="all", default=None, metavar="ID[,ID…]",
                       help="return computations: all, or the listed comp ids")
    group.add_argument("--predictions", type=_comma_list, default=(), metavar="ID[,ID…]",
                       help="prediction ids whose propensity to return")
    group.add_argument("--propensity-type", choices=PROPENSITY_TYPES, default="score",
                       help="score (probability 0–1) or pct (percentile 0–100)")


def _add_fetch_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="?", default="-",
                        help="CSV with a user_id or device_id column, or one id per line; - for stdin")
    parser.add_argument("--ids-column", help="the id column's name when it is neither user_id nor device_id")
    parser.add_argument("--id-type", choices=ID_TYPES,
                        help="send the ids as user_id or device_id (default: the CSV header, else user_id)")
    _add_query_flags(parser)
    run = parser.add_argument_group("how to fetch")
    run.add_argument("--sample", action="store_true",
                     help="use the embedded sample org (no key needed)")
    run.add_argument("--cache", help="SQLite cache file: resumes, and never fetches a user twice")
    run.add_argument("--max-age", type=_seconds, help="refetch cached answers older than this many seconds")
    run.add_argument("--rate-limit", type=_whole(1), default=540, help="requests per minute (default 540)")
    run.add_argument("--workers", type=_whole(1, 256), default=8, help="parallel requests (default 8)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _add_budget_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", metavar="URL",
                        help="share the org's quota with the team's other machines on this Redis "
                             "(redis://host:6379/0; default: $AMPTOOLS_BUDGET_URL, else this machine's "
                             "budget). A password is better given in AMPTOOLS_BUDGET_URL than here, "
                             "where other users of the machine may see the command line")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="amptools",
        description="Fetch Amplitude user profiles and turn them into tables, reports and "
                    "an Excel-safe marketing CSV. The key comes from AMPLITUDE_SECRET_KEY; "
                    "--sample uses the embedded sample org instead.",
        epilog="Exit codes: 0 all fetched, 1 some users not fetched (failed or unknown), 2 bad usage or input, "
               "3 authentication failed.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fetch = commands.add_parser("fetch", help="fetch profiles and write every table as CSV",
                                description="Fetch profiles and write every table, failures.csv "
                                            "and optionally marketing.csv into --out.")
    _add_fetch_flags(fetch)
    _add_budget_flag(fetch)
    out = fetch.add_argument_group("output")
    out.add_argument("--out", default="out", help="output folder (default: out)")
    out.add_argument("--format", choices=("csv", "parquet"), default="csv",
                     help="table format; parquet needs pyarrow")
    out.add_argument("--marketing", action="store_true", help="also write marketing.csv")
    out.add_argument("--marketing-rec-id", help="the recommendation set for marketing.csv")
    out.add_argument("--top-n", type=_whole(1), default=5, help="items per user in marketing.csv")
    out.add_argument("--marketing-props", type=_comma_list, default=(), metavar="NAME[,NAME…]",
                     help="user properties to include in marketing.csv")
    out.add_argument("--include-pii", action="store_true",
                     help="allow personal data (e-mail, phone, names) in marketing.csv")
    out.add_argument("--braze", action="store_true",
                     help=f"also write {BRAZE_CSV}, the marketing table as Braze's user import takes it")
    out.add_argument("--braze-json", action="store_true",
                     help=f"also write {BRAZE_JSON}: Braze /users/track bodies that keep the item lists")
    out.add_argument("--rename", type=_renames, default={}, metavar="OLD=NEW[,OLD=NEW…]",
                     help="rename marketing table columns in marketing.csv and the Braze files, e.g. "
                          "country=country_name (a custom attribute where Braze's default one "
                          "wants ISO codes)")
    out.add_argument("--snapshot", metavar="STORE",
                     help="also keep the fetch as a snapshot in this store (a Parquet dataset folder; "
                          "see amptools drift)")
    out.add_argument("--snapshot-label", metavar="LABEL", help="a name for the snapshot (needs --snapshot)")
    chosen = fetch.add_argument_group("users from an Amplitude cohort (instead of an ids file)")
    chosen.add_argument("--cohort", metavar="NAME_OR_ID",
                        help="fetch the members of this cohort (Behavioral Cohorts API; needs "
                             "AMPLITUDE_API_KEY too, or --sample)")
    chosen.add_argument("--cohort-sample", type=_whole(1), metavar="N",
                        help="fetch a seeded random N of the cohort's members, not all")
    chosen.add_argument("--cohort-cache", metavar="PATH",
                        help="SQLite file keeping cohort downloads (500 a month per org)")

    report = commands.add_parser("report", help="write a re-runnable analysis notebook",
                                 description="Write an analysis notebook (nbformat) that fetches "
                                             "through the cache and shows the tables and figures.")
    _add_fetch_flags(report)
    report.add_argument("--out", default="report.ipynb", help="the notebook to write")
    report.add_argument("--title", help="the report's title")
    report.add_argument("--execute", action="store_true", help="run the notebook after writing it")
    report.add_argument("--html", action="store_true",
                        help="also write a self-contained HTML copy (implies --execute)")

    _add_preview_command(commands)

    drift = commands.add_parser(
        "drift", help="what changed between two snapshots of a store, as an HTML report",
        description="Compare two snapshots of a store (amptools fetch --snapshot): how much each "
                    "recommendation set changed, which items came and went, who joined and left "
                    "cohorts, which computed properties moved. Writes a self-contained HTML report.")
    drift.add_argument("store", metavar="STORE", help="the snapshot store (a folder)")
    drift.add_argument("--from", dest="before", metavar="SNAPSHOT",
                       help="the earlier snapshot: id, label or position (default: the one before --to)")
    drift.add_argument("--to", dest="after", metavar="SNAPSHOT",
                       help="the later snapshot: id, label or position (default: the newest)")
    drift.add_argument("--by", default="rec_id", choices=("rec_id", "recommendation_source", "child_rec_id"),
                       help="what names a user's lists (default rec_id)")
    drift.add_argument("--k", type=_whole(1), help="compare only the top K items of each list")
    drift.add_argument("--out", default="drift.html", help="the report to write (default: drift.html)")
    drift.add_argument("--title", help="the report's title")

    demo = commands.add_parser("demo", help="the whole job headless on the sample org")
    demo.add_argument("--out", default="out", help="output folder (default: out)")
    demo.add_argument("--users", type=_whole(1, 2001), default=DEMO_USERS, help="how many sample users")

    cohorts = commands.add_parser("cohorts", help="list the project's Amplitude cohorts",
                                  description="The Behavioral Cohorts API: needs AMPLITUDE_API_KEY "
                                              "and AMPLITUDE_SECRET_KEY, or --sample.")
    cohort_commands = cohorts.add_subparsers(dest="cohorts_command", metavar="ACTION", required=True)
    listing = cohort_commands.add_parser("list", help="id, name, size, last computed, sync targets")
    listing.add_argument("--sample", action="store_true", help="use the embedded sample org (no keys needed)")
    listing.add_argument("--archived", action="store_true", help="include archived cohorts")
    listing.add_argument("--csv", action="store_true", help="write CSV to stdout instead of a table")

    server = commands.add_parser("sample-server", help="run the embedded sample org in the foreground")
    server.add_argument("--port", type=_whole(0, 65535), default=8765, help="0 picks a free port")
    server.add_argument("--rate-limit", type=_whole(1), default=ORG_REQUESTS_PER_MINUTE,
                        help=f"requests per window (default {ORG_REQUESTS_PER_MINUTE}, the org's limit)")
    server.add_argument("--window", type=_seconds, default=60.0, help="rate-limit window in seconds")
    server.add_argument("--latency", type=_seconds, default=0.0, help="seconds added to every answer")
    return parser


#: Options whose value is a list of ids or names, never a file: a value that is an
#: existing file was meant as the ids file (``--computations ids.csv``, whose value is optional).
_VALUE_OPTIONS = (("--computations", "computations"), ("--recs", "recs"), ("--predictions", "predictions"),
                  ("--marketing-props", "marketing_props"), ("--marketing-rec-id", "marketing_rec_id"))


def _refuse_files_as_values(args: argparse.Namespace) -> None:
    """An option given an existing file as its value took the ids file: say so, before
    anything is read (the ids would otherwise be read from stdin, silently waiting)."""
    for flag, name in _VALUE_OPTIONS:
        value = getattr(args, name, None)
        values = [value] if isinstance(value, str) else list(value or ())
        if isinstance(value, tuple):
            values.append(",".join(value))
        for text in values:
            if text and text not in ("all", "-") and Path(text).is_file():
                hint = ", or write --computations=all before it" if flag == "--computations" else ""
                raise UsageError(f"{flag} {text}: that is a file, not an id. Put the ids file before "
                                 f"{flag} (amptools {args.command} {text} {flag} …){hint}.")


def _query(args: argparse.Namespace) -> ProfileQuery:
    _refuse_files_as_values(args)
    computations: bool | tuple[str, ...] = False
    if args.computations == "all":
        computations = True
    elif args.computations:
        computations = _comma_list(args.computations)
    return ProfileQuery(recs=args.recs, rec_type=args.rec_type, amp_props=args.props,
                        cohort_ids=args.cohorts, computations=computations,
                        predictions=args.predictions, propensity_type=args.propensity_type)


def _check_paths(args: argparse.Namespace, *, out_is_file: bool, example: str = "report.ipynb") -> None:
    """Refuse paths that would only fail after the fetch (an output folder that is a
    file, a cache that is a folder), before anything is sent."""
    out = Path(args.out)
    if out_is_file and out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; give the file's name, e.g. {example}.")
    if not out_is_file and out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a folder for the tables.")
    parent = out.parent if out_is_file else out
    for above in (parent, *parent.parents):
        if above.exists():
            if not above.is_dir():
                raise UsageError(f"--out {args.out} lies under {above}, which is a file, not a folder.")
            break
    if args.cache is not None and Path(args.cache).expanduser().is_dir():
        raise UsageError(f"--cache {args.cache} is a folder; give a file such as profiles.sqlite.")
    store = getattr(args, "snapshot", None)
    if store is not None and Path(store).exists() and not Path(store).is_dir():
        raise UsageError(f"--snapshot {store} is a file; give the store's folder (created when needed).")
    if getattr(args, "snapshot_label", None) and store is None:
        raise UsageError("--snapshot-label names a snapshot: add --snapshot STORE.")


def _check_cohort_options(args: argparse.Namespace) -> None:
    """The --cohort options must make sense before a cohort download (500 a month) is spent."""
    if args.cohort is None:
        given = [flag for flag, value in (("--cohort-sample", args.cohort_sample),
                                          ("--cohort-cache", args.cohort_cache)) if value is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} only apply with --cohort NAME_OR_ID; add --cohort "
                             f"or drop {' and '.join(given)}.")
        return
    if args.ids != "-":
        raise UsageError("give either an ids file or --cohort, not both.")
    if args.cohort_cache is not None and Path(args.cohort_cache).expanduser().is_dir():
        raise UsageError(f"--cohort-cache {args.cohort_cache} is a folder; give a file such as "
                         "cohorts.sqlite.")


def _read_utf8(path: Path, what: str) -> str:
    """A text file's content, or a UsageError naming the line that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UsageError(f"{what} {path} is not UTF-8 text (line {line} is not); save it as UTF-8 "
                         "and run again.") from None


def _read_attributes(name: str | None) -> Any:
    """The --attributes CSV as a table with a user_id column (None without the option)."""
    if name is None:
        return None
    import io

    import pandas as pd

    path = Path(name)
    if not path.is_file():
        raise UsageError(f"no attributes file at {name}: give a CSV with a user_id column.")
    text = _read_utf8(path, "the attributes file")
    try:
        attributes = pd.read_csv(io.StringIO(text), dtype=str)
    except (ValueError, pd.errors.EmptyDataError) as error:
        raise UsageError(f"the attributes file {name} is not a CSV that can be read "
                         f"({type(error).__name__}: {str(error)[:120]}).") from None
    if "user_id" not in attributes.columns:
        found = ", ".join(map(str, attributes.columns[:10])) or "none"
        raise UsageError(f"the attributes file {name} has no user_id column (its columns: {found}); "
                         "add one, with the users' ids.")
    return attributes


def _check_marketing(args: argparse.Namespace, query: ProfileQuery) -> None:
    """The marketing options must fit the query before the fetch, not fail after it."""
    from .export import is_personal_data_name

    given = [flag for flag, value in (("--marketing-rec-id", args.marketing_rec_id),
                                      ("--marketing-props", args.marketing_props),
                                      ("--include-pii", args.include_pii),
                                      ("--rename", args.rename)) if value]
    marketing_files = args.marketing or getattr(args, "braze", False) or getattr(args, "braze_json", False)
    if given and not marketing_files:
        raise UsageError(f"{', '.join(given)} only apply to the marketing table: add --marketing "
                         "(or --braze, --braze-json).")
    if args.marketing_rec_id and args.marketing_rec_id not in query.recs:
        raise UsageError(f"--marketing-rec-id {args.marketing_rec_id} is not one of the sets "
                         f"fetched (--recs {','.join(query.recs) or 'is empty'}): add it to --recs.")
    if args.marketing_props and not query.amp_props:
        raise UsageError("--marketing-props needs the user properties: add --props.")
    personal = [name for name in args.marketing_props if is_personal_data_name(name)]
    if personal and not args.include_pii:
        raise UsageError(f"--marketing-props {', '.join(personal)} look like personal data; "
                         "add --include-pii if marketing.csv may hold it.")
    _check_renames(args.rename, args.marketing_props, args.top_n)


#: Marketing table columns --rename may rename (the ids stay: Braze's external_id is the user_id).
RENAMABLE = ("rec_id", "is_control", "recommendation_source", "rec_items")


def _check_renames(renames: dict[str, str], props: Sequence[str], top_n: int) -> None:
    """Every --rename must name a column the marketing table will have, and give a new name
    no other column has, before the fetch."""
    columns = [*RENAMABLE, *(f"rec_{n}" for n in range(1, top_n + 1)), *props,
               *(f"prop:{name}" for name in props)]
    for old, new in renames.items():
        if old not in columns:
            shown = ", ".join([*props, *RENAMABLE, "rec_1 … rec_N"])
            raise UsageError(f"--rename {old}={new}: the marketing table has no column {old!r}; "
                             f"the columns that can be renamed are {shown}.")
    taken = [c for c in ["user_id", "device_id", *columns] if c not in renames]
    clashes = [new for new in renames.values() if new in taken or list(renames.values()).count(new) > 1]
    if clashes:
        raise UsageError(f"--rename: {', '.join(map(repr, dict.fromkeys(clashes)))} would name two columns; "
                         "choose another new name.")


def _load_ids(args: argparse.Namespace, stderr: TextIO = sys.stderr) -> tuple[list[str], str]:
    _refuse_files_as_values(args)
    if args.ids == "-":
        if sys.stdin.isatty():  # not piped: say what is awaited instead of waiting in silence
            print("amptools: no ids file given, so the ids are read from this terminal, one per "
                  "line; end with Ctrl-D (or give an ids file: amptools "
                  f"{args.command} ids.csv …).", file=stderr)
        content: str | bytes = sys.stdin.read()
    else:
        path = Path(args.ids)
        if not path.is_file():
            raise UsageError(f"no ids file at {path}: give a CSV path, or - to read ids from stdin.")
        content = path.read_bytes()
    parsed = parse_id_file(content, id_type=args.id_type, column=args.ids_column)
    if args.id_type and parsed.id_type not in (None, args.id_type):
        raise UsageError(f"--id-type {args.id_type}, but the file has no {args.id_type} column "
                         f"(it has {parsed.id_type}): drop --id-type, or name the column with --ids-column.")
    if not parsed.ids:
        raise UsageError("no ids found: give a CSV with a user_id or device_id column, "
                         "or one id per line.")
    id_type = args.id_type or parsed.id_type or "user_id"
    return parsed.ids, id_type


def _client(sample: bool, budget: str | None = None, **kwargs: Any) -> Any:
    """The Profile API client: the embedded sample org with --sample, else the key's project;
    on the team's budget when --budget names one."""
    from .budget import open_budget
    from .connection import connect
    from .transport import Secret

    team = None if budget is None else Secret(budget)
    del budget
    if team is not None:
        try:
            open_budget(team, what="--budget")  # a bad URL is said as the option's, before any work
        except ConfigurationError as error:
            message = str(error)
        else:
            message = ""
        if message:
            raise UsageError(message)
        kwargs["budget"] = team
    try:
        return connect(sample=sample, **kwargs)
    except ConfigurationError as error:
        message = str(error)
    raise UsageError(f"{message} Or add --sample to use the embedded sample org.")


def _write_table(frame: Any, path: Path, fmt: str) -> Path:
    from . import export

    if fmt == "parquet":
        try:
            frame.to_parquet(path.with_suffix(".parquet"), index=False)
        except ImportError:
            raise UsageError("--format parquet needs pyarrow: pip install pyarrow") from None
        return path.with_suffix(".parquet")
    return Path(export.to_csv(frame, path.with_suffix(".csv")))


def write_outputs(profile_set: ProfileSet, out: Path, *, fmt: str = "csv", marketing: bool = False,
                  marketing_options: dict[str, Any] | None = None, braze: bool = False,
                  braze_json: bool = False, rename: dict[str, str] | None = None,
                  written: list[Path] | None = None) -> list[Path]:
    """Write every table, failures and (optionally) marketing.csv and the Braze files; return the paths.

    ``rename`` renames marketing table columns; ``written``, when given, is filled as the
    files are written, so a caller still knows them when a later file fails."""
    from . import export, tables

    written = [] if written is None else written
    renamed = rename or {}

    def marketing_table(**extra: Any) -> Any:
        table = export.marketing_table(profile_set, **(marketing_options or {}), **extra)
        return table.rename(columns={old: new for old, new in renamed.items() if old in table.columns})

    out.mkdir(parents=True, exist_ok=True)
    for name in TABLES:
        written.append(_write_table(getattr(tables, name)(profile_set), out / name, fmt))
    written.append(_write_table(profile_set.failures, out / "failures", fmt))
    if marketing:
        written.append(Path(export.to_csv(marketing_table(), out / "marketing.csv")))
    # Last, so a table Braze would refuse (BrazeImportError) costs none of the files above.
    if braze:
        written += export.to_braze_csv(marketing_table(), out / BRAZE_CSV)
    if braze_json:
        written.append(export.to_braze_json(marketing_table(items_as="list"), out / BRAZE_JSON))
    return written


def _cohort_client(profile_client: Any, **kwargs: Any) -> Any:
    from .connection import cohort_client_for

    try:
        return cohort_client_for(profile_client, **kwargs)
    except ConfigurationError as error:
        raise UsageError(f"{error} Or add --sample to use the embedded sample org.") from None
    except CacheError as error:  # the --cohort-cache file: said before any download
        raise UsageError(f"--cohort-cache: {error}") from None


def _cohort_ids(args: argparse.Namespace, profile_client: Any, stderr: TextIO) -> tuple[list[str], str]:
    members = _cohort_client(profile_client, cache=args.cohort_cache).members(args.cohort)
    info = members.attrs.get("cohort", {})
    ids = members["user_id"].dropna().drop_duplicates().tolist()
    if len(ids) < len(members):
        print(f"amptools: {len(members) - len(ids)} cohort members have no user_id; the Profile API "
              "needs one, so they are left out.", file=stderr)
    if args.cohort_sample is not None and args.cohort_sample < len(ids):
        from .controller import sample_ids

        ids = sample_ids(ids, args.cohort_sample, include=())
    print(f"amptools: cohort {info.get('name') or args.cohort!r}: {len(ids):,} users to fetch "
          f"({'reused an earlier download' if info.get('from_cache') else 'downloaded'}; "
          f"{info.get('downloads_spent', 0)} cohort downloads spent by this run).", file=stderr)
    if not ids:
        raise UsageError(f"the cohort {args.cohort!r} has no members with a user_id.")
    return ids, "user_id"


def _fetch(args: argparse.Namespace, stderr: TextIO = sys.stderr) -> Any:
    cohort = getattr(args, "cohort", None)
    ids, id_type = ([], "user_id") if cohort else _load_ids(args, stderr)
    query = _query(args)
    client = _client(args.sample, getattr(args, "budget", None), rate_limit=args.rate_limit)
    if cohort:
        ids, id_type = _cohort_ids(args, client, stderr)
    try:
        return client.get_profiles(ids, query=query, id_type=id_type, workers=args.workers,
                                   progress=not args.no_progress, cache=args.cache,
                                   max_age=args.max_age)
    finally:
        print(f"amptools: {client.quota()}", file=stderr)  # what the run took of the org's quota


def _report_failures(profile_set: Any, stderr: TextIO, *, more: str = "see failures.csv") -> int:
    """List who was not fetched (the first 20) on stderr; EXIT_FAILURES when anyone was not."""
    failures = profile_set.failures
    rows = [{"id": row.user_id if isinstance(row.user_id, str) else row.device_id,
             "status": row.status, "error": row.error}
            for row in failures.head(20).itertuples(index=False)]
    return _print_not_fetched(rows, len(failures), sum(profile_set.counts.values()), stderr, more=more)


def _print_not_fetched(rows: Sequence[dict[str, Any]], count: int, total: int, stderr: TextIO,
                       *, more: str) -> int:
    if count == 0:
        return EXIT_OK
    print(f"{count:,} of the {total:,} users {'was' if count == 1 else 'were'} not fetched:", file=stderr)
    shown = rows[:20]
    for row in shown:
        print(f"  {row['id']}: {row['status']} — {row['error']}", file=stderr)
    if count > len(shown):
        print(f"  … and {count - len(shown):,} more ({more})", file=stderr)
    return EXIT_FAILURES


def cmd_fetch(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    options = {"rec_id": args.marketing_rec_id, "top_n": args.top_n,
               "props": args.marketing_props, "include_pii": args.include_pii}
    _check_paths(args, out_is_file=False)
    _check_marketing(args, _query(args))
    _check_cohort_options(args)
    try:
        profile_set = _fetch(args, stderr)
    except AuthenticationError as error:
        # Nothing already fetched is lost: the tables of the partial run are written.
        if error.partial is not None and error.partial.counts["ok"]:
            write_outputs(error.partial, Path(args.out), fmt=args.format)
            print(f"amptools: wrote what was fetched before the failure to {Path(args.out).resolve()}",
                  file=stderr)
        raise
    written: list[Path] = []
    try:
        write_outputs(profile_set, Path(args.out), fmt=args.format, marketing=args.marketing,
                      marketing_options=options, braze=args.braze, braze_json=args.braze_json,
                      rename=args.rename, written=written)
    except AmptoolsError as error:  # a Braze file refused: what was fetched and written is still said
        _print_fetched(profile_set, written, args.out, stdout)
        _report_failures(profile_set, stderr)
        print(f"amptools: {type(error).__name__}: {error}", file=stderr)
        if isinstance(error, BrazeImportError):
            print("amptools: --rename OLD=NEW renames a marketing column, e.g. --rename "
                  "country=country_name makes it a custom attribute.", file=stderr)
        return EXIT_FAILURES
    _print_fetched(profile_set, written, args.out, stdout)
    if args.snapshot is not None:
        from . import snapshots

        snapshot = snapshots.save(profile_set, args.snapshot, label=args.snapshot_label)
        print(f"saved snapshot {snapshot} to {Path(args.snapshot).resolve()}", file=stdout)
        if profile_set.from_cache and args.max_age is None:
            print(f"amptools: {profile_set.from_cache} answers of this snapshot came from the cache, as "
                  "fetched then, not now; for a nightly snapshot pass --max-age (e.g. 72000 seconds) so "
                  "older answers are fetched again.", file=stderr)
    return _report_failures(profile_set, stderr)


def _print_fetched(profile_set: Any, written: Sequence[Path], out: str, stdout: TextIO) -> None:
    print(f"{profile_set!r}", file=stdout)
    print(f"wrote {len(written)} file{'' if len(written) == 1 else 's'} to {Path(out).resolve()}", file=stdout)


def cmd_report(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from . import notebooks

    _check_paths(args, out_is_file=True)
    ids, id_type = _load_ids(args, stderr)
    # Paths on the command line are relative to the working directory; the notebook
    # runs in its own folder, so it gets the cache's path relative to that folder.
    cache = None
    if args.cache is not None:
        cache = os.path.relpath(Path(args.cache).resolve(), Path(args.out).resolve().parent)
    path = notebooks.build_report(args.out, ids, _query(args), title=args.title, cache=cache,
                                  id_type=id_type, sample=args.sample, workers=args.workers,
                                  max_age=args.max_age, rate_limit=args.rate_limit)
    print(f"wrote {path}", file=stdout)
    if not (args.execute or args.html):
        return EXIT_OK  # nothing fetched yet: the notebook fetches when it is run
    executed = notebooks.execute_report(path, html=args.html)
    print(f"ran {path}: its outputs are saved in it", file=stdout)
    for item in executed:
        if item != path:
            print(f"wrote {item}", file=stdout)
    outcome = notebooks.fetch_outcome(path)
    if outcome is None:
        return EXIT_OK
    counts = outcome["counts"]
    print(f"the report fetched {sum(counts.values()):,} ids: "
          f"{', '.join(f'{counts.get(status, 0):,} {status}' for status in STATUSES)}", file=stdout)
    return _print_not_fetched(outcome["not_fetched"], counts.get("not_found", 0) + counts.get("failed", 0),
                              sum(counts.values()), stderr, more="the report lists them")


def cmd_demo(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from . import notebooks
    from .connection import new_sample_server

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    query = notebooks.DEMO_QUERY
    cache = out / "profiles.sqlite"
    # The demo shows the job, not the pacing: the local org's limit is raised so a
    # few hundred users do not wait out a 600-a-minute window.
    with new_sample_server(rate_limit=100_000) as server:
        ids = list(server.org.user_ids[: args.users])  # testUser comes first
        client = server.client(rate_limit=100_000)
        profile_set = client.get_profiles(ids, query=query, cache=cache, progress=True)
    written = write_outputs(profile_set, out, marketing=True,
                            marketing_options={"rec_id": query.recs[0], "props": ("country", "plan")})
    report = notebooks.build_report(out / "report.ipynb", ids, query, title="amptools demo report",
                                    cache=cache.name, sample=True)
    written += notebooks.execute_report(report, html=True)
    print(f"{profile_set!r}", file=stdout)
    for path in written:
        print(f"wrote {path}", file=stdout)
    print(f"open {(out / 'report.html').resolve()} in a browser, "
          f"or {(out / 'marketing.csv').resolve()} in Excel", file=stdout)
    return _report_failures(profile_set, stderr)


def cmd_cohorts(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    listing = _cohort_client(_client(args.sample)).list_cohorts(include_archived=args.archived)
    if args.csv:
        from . import export

        frame = listing.assign(**{c: listing[c].map(";".join) for c in ("owners", "synced_to")})
        export.to_csv(frame, stdout, bom=False)
        return EXIT_OK
    shown = listing[["cohort_id", "name", "size", "last_computed", "synced_to"]].assign(
        last_computed=listing["last_computed"].dt.strftime("%Y-%m-%d %H:%M").fillna("never"),
        synced_to=listing["synced_to"].map(", ".join))
    # Names and ids are anyone's text: a terminal would run their escape sequences
    # (clear the screen, set the title), so they are shown as printable text only.
    for column in ("cohort_id", "name", "synced_to"):
        shown[column] = shown[column].map(_printable)
    print(shown.to_string(index=False), file=stdout)
    print(f"{len(listing)} cohorts", file=stdout)
    return EXIT_OK


def _printable(text: str) -> str:
    """``text`` with every character a terminal would act on (escapes, controls, bidi
    overrides, line breaks) written as its Python escape, e.g. ``\\x1b``."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in str(text))


def cmd_sample_server(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from .sample import serve

    try:
        serve(args.port, rate_limit=args.rate_limit, window=args.window, latency=args.latency)
    except OSError as error:
        raise UsageError(f"cannot serve on 127.0.0.1:{args.port} ({error.strerror or error}): "
                         "pick another --port (0 picks a free one).") from None
    return EXIT_OK


# -- preview: Braze Connected Content messages for every user ------------------------------
def _add_preview_command(commands: Any) -> None:
    preview = commands.add_parser(
        "preview", help="render a Braze Connected Content message for every user, as CSV",
        description="Fetch the users with what the template's {% connected_content %} tag asks for "
                    "(or the query flags), render the message for each of them as Braze would, "
                    "and write user_id, device_id, status (rendered/aborted/error), message, "
                    "abort_reason, error, unresolved to --out. No request is made for the preview itself.")
    preview.add_argument("template", metavar="TEMPLATE_FILE", help="the Braze message (Liquid), UTF-8")
    _add_fetch_flags(preview)
    _add_budget_flag(preview)
    preview.add_argument("--attributes", metavar="CSV",
                         help="Braze attributes for ${name}: a CSV with a user_id column, one column per attribute")
    preview.add_argument("--out", default="previews.csv", help="the CSV to write (default: previews.csv)")


def cmd_preview(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from . import braze, export

    # Every option is checked before the fetch, which logs exposures and spends quota.
    path = Path(args.template)
    if not path.is_file():
        raise UsageError(f"no template at {path}: give the file holding the Braze message.")
    template = _read_utf8(path, "the template")
    _check_paths(args, out_is_file=True, example="previews.csv")
    query = _query(args)
    if not query.to_params():  # no query flags: fetch what the template's tag asks for
        call = braze.parse_tag(template)
        query = call.query
        if args.id_type is None and call.id_type is not None:
            args.id_type = call.id_type
    attributes = _read_attributes(args.attributes)
    ids, id_type = _load_ids(args, stderr)
    client = _client(args.sample, args.budget, rate_limit=args.rate_limit)
    profiles = client.get_profiles(ids, query=query, id_type=id_type, workers=args.workers,
                                   progress=not args.no_progress, cache=args.cache, max_age=args.max_age)
    previews = braze.preview(template, profiles, attributes=attributes)
    written = export.to_csv(previews, Path(args.out))
    counts = previews["status"].value_counts()
    print(f"{profiles!r}", file=stdout)
    print(", ".join(f"{int(counts.get(status, 0)):,} {status}" for status in braze.PREVIEW_STATUSES), file=stdout)
    print(f"wrote {written}", file=stdout)
    errors = previews["error"].dropna()
    if len(errors):
        print(f"amptools: {len(errors)} message{' was' if len(errors) == 1 else 's were'} not rendered, "
              f"e.g.: {errors.iloc[0]}", file=stderr)
    not_fetched = _report_failures(profiles, stderr, more="their rows say why")
    return EXIT_FAILURES if len(errors) else not_fetched


def _snapshot_choice(value: str | None) -> str | int | None:
    """A snapshot named on the command line: a position when it is a whole number, else an id or label."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def cmd_drift(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from .controller import OverTime
    from .snapshots import SnapshotError

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {args.out} is a folder; give the report's file name, e.g. drift.html.")
    try:
        over_time = OverTime(args.store, by=args.by, k=args.k)
        over_time.compare(_snapshot_choice(args.before), _snapshot_choice(args.after))
    except SnapshotError as error:
        raise UsageError(str(error)) from None
    path = over_time.write_report(out, title=args.title)
    print(over_time.describe(), file=stdout)
    for row in over_time.summary().itertuples(index=False):
        print(f"  {getattr(row, args.by)}: {row.share_changed:.1%} of {row.n_users_compared:,} users' lists changed, "
              f"mean RBO {row.mean_rbo:.3f}, {row.n_items_entered:,} items entered, {row.n_items_left:,} left",
              file=stdout)
    print(f"wrote {path}", file=stdout)
    return EXIT_OK


COMMANDS = {"fetch": cmd_fetch, "report": cmd_report, "demo": cmd_demo, "cohorts": cmd_cohorts,
            "sample-server": cmd_sample_server, "preview": cmd_preview, "drift": cmd_drift}


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    """Run the command line; return the exit code (never calls sys.exit itself)."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_OK if exit_.code in (0, None) else EXIT_USAGE
    try:
        with warnings.catch_warnings():
            # Warnings (the recommendation-exposure note among them) read as notes
            # on stderr, not as Python source locations.
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, *_, **__: print(
                f"amptools: note: {message}", file=stderr)
            return COMMANDS[args.command](args, stdout, stderr)
    except AuthenticationError as error:
        print(f"amptools: {error}", file=stderr)
        partial = getattr(error, "partial", None)
        if partial is not None:
            print(f"amptools: kept what was fetched before: {partial!r}", file=stderr)
        return EXIT_AUTH
    except (UsageError, InvalidQueryError, ConfigurationError) as error:
        print(f"amptools: {error}", file=stderr)
        return EXIT_USAGE
    except AmptoolsError as error:
        print(f"amptools: {type(error).__name__}: {error}", file=stderr)
        return EXIT_FAILURES
    except KeyboardInterrupt:
        print("amptools: interrupted", file=stderr)
        return 130


def main_entry() -> None:
    """Console-script entry point."""
    raise SystemExit(main())


if __name__ == "__main__":
    main_entry()
