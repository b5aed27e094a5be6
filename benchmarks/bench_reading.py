"""Benchmark: tables from stored raw answers (JSON text), against json.loads + json_normalize.

A snapshot keeps every answer as JSON text (and so does the profile cache); its tables
are rebuilt from that text. What is measured, both sides in the same run:

- Data: ``SampleOrg(n_users=N)`` (100,000 by default) asked as ``bench_tables.py`` asks
  (three recommendation sets of 10 items, ~30 properties, cohorts, six computations; two
  bodies per user, the two-request way), each body kept as JSON text.
- ``baseline``: ``json.loads`` of every body, then ``bench_tables.baseline``: the
  ``pd.json_normalize`` + ``explode`` tables an analyst writes.
- ``amptools``: ``amptools.reading.read_tables`` of the same text: the four tables
  (recommendations, properties, cohorts, computations), exactly as the table functions
  build them from the parsed profiles (the tests compare them).
- ``amptools, the profiles way``: ``json.loads`` + ``UserProfile.from_payloads`` + the
  four table functions: what reading stored answers cost before (the exact path).

Each variant runs in a fresh subprocess on the same pickled text; time is the best of
``--repeat`` runs; memory is the RSS high-water growth of the process (Arrow buffers are
invisible to tracemalloc, so it is the honest measure here). Prints the ratios.

Run::

    .venv/bin/python benchmarks/bench_reading.py                 # 100,000 users
    .venv/bin/python benchmarks/bench_reading.py --n-users 20000 --repeat 1
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from _common import parse_options

import pandas as pd  # noqa: E402

import bench_tables  # noqa: E402
from amptools import reading, tables  # noqa: E402
from amptools.models import UserProfile  # noqa: E402

QUERY = bench_tables.QUERY
GOAL = 3.0


def baseline(texts: list[tuple[str, str]]) -> dict[str, pd.DataFrame]:
    return bench_tables.baseline([(json.loads(main), json.loads(second)) for main, second in texts])


def amptools_fast(texts: list[tuple[str, str]]) -> dict[str, pd.DataFrame]:
    return reading.read_tables([main for main, _ in texts], query=QUERY,
                               computation_bodies=[second for _, second in texts])


def amptools_profiles(texts: list[tuple[str, str]]) -> dict[str, pd.DataFrame]:
    profiles = [UserProfile.from_payloads([json.loads(main), json.loads(second)], QUERY) for main, second in texts]
    return {name: getattr(tables, name)(profiles) for name in reading.FAST_TABLES}


VARIANTS: dict[str, Callable[[Any], dict[str, pd.DataFrame]]] = {
    "baseline (json.loads + json_normalize)": baseline,
    "amptools (reading.read_tables)": amptools_fast,
    "amptools, the profiles way": amptools_profiles,
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(variant: str, data_path: str, repeat: int) -> dict[str, Any]:
    with open(data_path, "rb") as handle:
        texts = pickle.load(handle)
    gc.collect()
    rss_before = _rss_bytes()
    times, rows = [], {}
    for _ in range(repeat):
        start = time.perf_counter()
        result = VARIANTS[variant](texts)
        times.append(time.perf_counter() - start)
        rows = {name: len(frame) for name, frame in result.items()}
        del result
        gc.collect()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": min(times), "rss_growth": max(0, maxrss - rss_before), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return 0
    options = parse_options(__doc__, argv, n_users=(100_000, "sample users"), repeat=(3, "best of this many runs"))
    print(f"pandas {pd.__version__}, string dtype {pd.Series(['x']).dtype!r}; python {sys.version.split()[0]}")
    print(f"preparing {options.n_users:,} users × 2 answers as JSON text ...", flush=True)
    texts = [(json.dumps(main, ensure_ascii=False), json.dumps(second, ensure_ascii=False))
             for main, second in bench_tables.make_payloads(options.n_users)]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        data_path = os.path.join(folder, "texts.pickle")
        with open(data_path, "wb") as handle:
            pickle.dump(texts, handle, protocol=pickle.HIGHEST_PROTOCOL)
        del texts
        for variant in VARIANTS:
            completed = subprocess.run([sys.executable, __file__, "--worker", variant, data_path, str(options.repeat)],
                                       check=True, capture_output=True, text=True)
            results[variant] = json.loads(completed.stdout.strip().splitlines()[-1])
            r = results[variant]
            print(f"{variant:40s} {r['seconds']:8.3f} s   RSS growth {r['rss_growth'] / 2**20:8.1f} MiB   rows {r['rows']}",
                  flush=True)
    base = results["baseline (json.loads + json_normalize)"]
    print()
    ok = True
    for variant in ("amptools (reading.read_tables)", "amptools, the profiles way"):
        r = results[variant]
        speed = base["seconds"] / r["seconds"]
        memory = r["rss_growth"] / max(base["rss_growth"], 1)
        print(f"{variant:40s} speed-up x{speed:5.2f}   memory ratio {memory:5.2f} (amptools / baseline, RSS growth)")
        if variant.startswith("amptools (reading"):
            ok = speed >= GOAL and memory <= 1.0
            print(f"goal: ≥ x{GOAL:.0f} and no more memory: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
