"""Benchmark: amptools.tables against a plain json_normalize + explode baseline.

What is measured (both sides in the same run, same machine, same data):

- Data: ``SampleOrg(n_users=N)`` (100,000 by default) asked for three recommendation
  sets (``home-feed``, ``similar-items``, ``email-picks``; 10 items each), all user
  properties (~30), tracked cohorts and all six computations. As the client does,
  each user is two response bodies: properties + recs + cohorts, and computations
  alone (``ProfileQuery.parts()``), so computations and properties stay apart.
- ``amptools (profiles)`` — the primary number: from a ``list[UserProfile]`` (what
  ``ProfileSet.profiles`` holds) to the four tables the baseline also builds:
  ``recommendations``, ``properties``, ``cohorts``, ``computations``.
- ``amptools all tables (profiles)`` — the same plus ``cohort_matrix``,
  ``propensities`` and ``summary`` (the baseline has no equivalent; stricter).
- ``amptools (raw dicts)`` — from the raw bodies: parsing them into profiles
  (``UserProfile.from_payloads``) plus the four tables.
- ``baseline (raw dicts)`` — from the same raw bodies: ``pd.json_normalize`` with
  ``record_path`` + ``explode`` + ``groupby().cumcount()`` for the long recs table
  (with ``last_updated`` converted to datetime), ``json_normalize`` of ``amp_props``
  for properties, ``explode`` for cohorts, ``json_normalize`` + ``melt`` +
  ``to_numeric`` for computations.

Each variant runs in a fresh subprocess that loads the prepared inputs from a
pickle, so no variant inherits another's heap. Time is the best of ``--repeat``
runs (``time.perf_counter``). Peak memory is measured in a separate run of the
same process with :mod:`tracemalloc`: the peak of memory *allocated by the
tabulation* above what the inputs already hold. tracemalloc sees Python objects
and numpy buffers (numpy reports its allocations to it); it would miss Arrow
buffers, so the script refuses tracemalloc as the headline when pyarrow backs
pandas' string dtype and says so. The RSS high-water growth (``ru_maxrss`` after
minus RSS before) is printed beside it as a cross-check; it is coarser (page
granularity, allocator reuse).

Run::

    .venv/bin/python benchmarks/bench_tables.py            # 100,000 users
    .venv/bin/python benchmarks/bench_tables.py --n-users 10000 --repeat 1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from amptools import tables  # noqa: E402
from amptools.models import UserProfile  # noqa: E402
from amptools.query import ProfileQuery  # noqa: E402

REC_IDS = ("home-feed", "similar-items", "email-picks")
QUERY = ProfileQuery(recs=REC_IDS, amp_props=True, cohort_ids=True, computations=True,
                     split_computations=True)  # two bodies per user, as the two-request way


# -- inputs --------------------------------------------------------------------------------
def make_payloads(n_users: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Two bodies per user, exactly as the client would receive them."""
    from amptools.sample.dataset import SampleOrg

    org = SampleOrg(n_users=n_users)
    main, only_computations = (part.to_params() for part in QUERY.parts())
    return [(org.payload(i, main), org.payload(i, only_computations)) for i in range(n_users)]


def parse(payloads: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[UserProfile]:
    return [UserProfile.from_payloads(pair, QUERY) for pair in payloads]


# -- the variants --------------------------------------------------------------------------
def amptools_four(profiles: list[UserProfile]) -> dict[str, pd.DataFrame]:
    return {
        "recommendations": tables.recommendations(profiles),
        "properties": tables.properties(profiles),
        "cohorts": tables.cohorts(profiles),
        "computations": tables.computations(profiles),
    }


def amptools_all(profiles: list[UserProfile]) -> dict[str, pd.DataFrame]:
    out = amptools_four(profiles)
    out["cohort_matrix"] = tables.cohort_matrix(profiles)
    out["propensities"] = tables.propensities(profiles)
    out["summary"] = tables.summary(profiles)
    return out


def amptools_raw(payloads: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, pd.DataFrame]:
    return amptools_four(parse(payloads))


def baseline(payloads: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, pd.DataFrame]:
    mains = [main["userData"] for main, _ in payloads]
    with_recs = [d for d in mains if d.get("recommendations")]
    recs = pd.json_normalize(
        with_recs, record_path="recommendations", meta=["user_id", "device_id"]
    )
    recs["last_updated"] = pd.to_datetime(recs["last_updated"], unit="s", utc=True)
    recs = recs.explode("items")
    recs["rank"] = recs.groupby(level=0).cumcount() + 1
    recs = recs.rename(columns={"items": "item"}).reset_index(drop=True)
    recs = recs[list(tables.RECOMMENDATION_COLUMNS)]

    props = pd.json_normalize([d.get("amp_props") or {} for d in mains], max_level=0)
    props.insert(0, "device_id", [d.get("device_id") for d in mains])
    props.insert(0, "user_id", [d.get("user_id") for d in mains])

    cohorts = pd.DataFrame(
        {
            "user_id": [d.get("user_id") for d in mains],
            "device_id": [d.get("device_id") for d in mains],
            "cohort_id": [d.get("cohort_ids") for d in mains],
        }
    ).explode("cohort_id")
    cohorts = cohorts[cohorts["cohort_id"].notna()].reset_index(drop=True)

    comp_data = [c["userData"] for _, c in payloads]
    wide = pd.json_normalize([d.get("amp_props") or {} for d in comp_data], max_level=0)
    wide.insert(0, "device_id", [d.get("device_id") for d in comp_data])
    wide.insert(0, "user_id", [d.get("user_id") for d in comp_data])
    computations = wide.melt(
        id_vars=["user_id", "device_id"], var_name="computation", value_name="raw"
    )
    computations = computations[computations["raw"].notna()
                                | computations["computation"].notna()]
    computations["value"] = pd.to_numeric(computations["raw"], errors="coerce")
    return {"recommendations": recs, "properties": props, "cohorts": cohorts,
            "computations": computations}


VARIANTS: dict[str, tuple[str, Callable[[Any], dict[str, pd.DataFrame]]]] = {
    "amptools (profiles)": ("profiles", amptools_four),
    "amptools all tables (profiles)": ("profiles", amptools_all),
    "amptools (raw dicts)": ("payloads", amptools_raw),
    "baseline (raw dicts)": ("payloads", baseline),
}


# -- measuring ------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(variant: str, data_path: str, repeat: int) -> dict[str, Any]:
    """Run one variant in this (fresh) process and measure it."""
    kind, function = VARIANTS[variant]
    with open(data_path, "rb") as handle:
        inputs = pickle.load(handle)[kind]
    gc.collect()
    rss_before = _rss_bytes()
    times = []
    result: dict[str, pd.DataFrame] = {}
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(inputs)
        times.append(time.perf_counter() - start)
        rows = {name: len(frame) for name, frame in result.items()}
        del result
        gc.collect()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    gc.collect()
    tracemalloc.start()
    result = function(inputs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "seconds": min(times),
        "tracemalloc_peak": peak,
        "rss_growth": max(0, maxrss - rss_before),
        "rows": rows,
    }


def run_variant(variant: str, data_path: str, repeat: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", variant, "--data", data_path,
         "--repeat", str(repeat)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, args.repeat)))
        return 0

    string_storage = pd.Series(["x"]).dtype
    arrow = getattr(string_storage, "storage", "") == "pyarrow"
    print(f"pandas {pd.__version__}, string dtype {string_storage!r}; python {sys.version.split()[0]}")
    print(f"preparing {args.n_users:,} users x 2 bodies from SampleOrg ...", flush=True)
    start = time.perf_counter()
    payloads = make_payloads(args.n_users)
    profiles = parse(payloads)
    print(f"  prepared in {time.perf_counter() - start:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data_path = os.path.join(tmp, "inputs.pickle")
        with open(data_path, "wb") as handle:
            pickle.dump({"payloads": payloads, "profiles": profiles}, handle,
                        protocol=pickle.HIGHEST_PROTOCOL)
        del payloads, profiles
        results = {}
        for variant in VARIANTS:
            results[variant] = run_variant(variant, data_path, args.repeat)
            r = results[variant]
            print(f"{variant:32s} {r['seconds']:8.3f} s   peak {r['tracemalloc_peak'] / 2**20:8.1f} MiB"
                  f" (tracemalloc)   RSS growth {r['rss_growth'] / 2**20:8.1f} MiB   rows {r['rows']}",
                  flush=True)
    base = results["baseline (raw dicts)"]
    print()
    if arrow:
        print("NOTE: pandas strings are Arrow-backed here: tracemalloc misses Arrow buffers, "
              "so compare the RSS growth column instead.")
    for variant in ("amptools (profiles)", "amptools all tables (profiles)", "amptools (raw dicts)"):
        r = results[variant]
        print(f"{variant:32s} speed-up x{base['seconds'] / r['seconds']:6.2f}   "
              f"peak memory ratio {r['tracemalloc_peak'] / base['tracemalloc_peak']:5.2f} "
              f"(amptools / baseline, tracemalloc)   "
              f"RSS growth ratio {r['rss_growth'] / max(base['rss_growth'], 1):5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
