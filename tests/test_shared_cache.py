"""Two real processes sharing one profile cache never fetch the same id twice (issue 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from amptools.budget import Claims, open_store
from amptools.bulk import CLAIM_TTL
from amptools.sample import SampleServer

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys
from amptools.client import ProfileClient
from amptools.sample.dataset import SampleOrg
client = ProfileClient.from_env(rate_limit=100_000)
ids = list(SampleOrg().user_ids[1:int(sys.argv[2]) + 1])
print("ready", flush=True)
sys.stdin.readline()
ps = client.get_profiles(ids, workers=4, progress=False, cache=sys.argv[1], amp_props=True, cohort_ids=True)
print(ps.counts["ok"], ps.from_cache, flush=True)
"""


def start(server: SampleServer, cache: Path | str, n: int, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "AMPLITUDE_SECRET_KEY": server.secret_key, "AMPLITUDE_PROFILE_API_URL": server.url,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(cache), str(n)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env, cwd=cwd)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def go(*children: subprocess.Popen[str]) -> list[str]:
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    return [child.communicate(timeout=120)[0].strip() for child in children]


@pytest.mark.slow
@pytest.mark.parametrize("paths", ["same", "relative and absolute"])
def test_two_processes_sharing_a_cache_fetch_each_id_once(tmp_path, paths):
    """Claims are keyed by the file itself: ``profiles.sqlite`` typed in one process and its
    absolute path in the other are one cache (issue 18: they fetched every id twice)."""
    n = 60
    # Slow answers, so both processes are at work on the same ids at the same time.
    with SampleServer(rate_limit=100_000, latency=0.05) as server:
        if paths == "same":
            children = [start(server, tmp_path / "shared.sqlite", n) for _ in range(2)]
        else:
            children = [start(server, "shared.sqlite", n, cwd=tmp_path),
                        start(server, tmp_path / "." / "shared.sqlite", n)]
        server.reset_arrivals()
        outputs = go(*children)
        asked = Counter(a.params["user_id"] for a in server.arrivals)
    assert all(child.returncode == 0 for child in children), outputs
    oks = [int(line.split()[0]) for line in outputs]
    from_cache = [int(line.split()[1]) for line in outputs]
    assert oks == [n, n]  # each process got every profile ...
    assert len(asked) == n and set(asked.values()) == {1}  # ... and each id was asked once
    assert sum(from_cache) >= n  # what one fetched, the other read from the cache


def test_a_claim_of_a_killed_process_blocks_nobody(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from amptools import budget\n"
                               "budget.claim('k', 'dead-run', 3600); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    store = Claims(open_store())
    assert store.is_claimed("k") and not store.claim("k", "me", CLAIM_TTL)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    assert not store.is_claimed("k") and store.claim("k", "me", CLAIM_TTL)
    store.release("k", "me")
