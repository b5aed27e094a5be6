"""Faults: a bulk fetch against a sample server that fails a third of its answers.

2,000 ids (1% of them unknown to the org) against 20% 5xx, 10% throttling, 2%
connection resets, 1% stalls and 1% truncated bodies, drawn afresh for every
attempt. Prints the settings, the outcome counts (their sum must equal the
unique ids: nothing lost), whether any id failed although one of its attempts
was not faulted (must be none: a failure only when every attempt within the
retry budget was hit), and the distribution of attempts per id.

    .venv/bin/python benchmarks/bench_faults.py [--users 2000] [--workers 8] [--max-retries 6]

Short settings keep it quick: a 1 s read timeout against 1.5 s stalls (so each
stall is a timeout, retried), a 10 ms backoff base and a 50 ms cap on the
throttle pause the server's ``Retry-After: 1`` asks for.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from _common import parse_options
from amptools.sample import Faults, SampleServer


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, users=2000, workers=8, max_retries=6, seed=1)

    faults = Faults(server_error=0.20, throttle=0.10, reset=0.02, stall=0.01, truncate=0.01,
                    stall_seconds=1.5, seed=args.seed)
    settings = dict(timeout=(1.0, 1.0), max_retries=args.max_retries, backoff_base=0.01,
                    backoff_cap=0.5, retry_after_cap=0.05, rate_limit=10**9, rate_period=1.0)
    n_unknown = args.users // 100
    with SampleServer(rate_limit=10**9, window=1.0, faults=faults,
                      n_users=max(args.users + 1, 2000)) as server:
        ids = list(server.org.user_ids[1:args.users - n_unknown + 1])
        ids += [f"nobody-{i}" for i in range(n_unknown)]
        client = server.client(**settings)
        started = time.monotonic()
        result = client.get_profiles(ids, workers=args.workers, progress=False)
        elapsed = time.monotonic() - started
        arrivals = server.arrivals

    print(f"faults: {faults}")
    print(f"client: {settings}, workers={args.workers}")
    print(f"ids: {len(ids)} ({n_unknown} unknown), {len(arrivals)} requests in {elapsed:.1f} s")
    counts = result.counts
    total = sum(counts.values())
    print(f"outcomes: {counts}  sum={total} of {len(set(ids))} unique ids "
          f"({'nothing lost' if total == len(set(ids)) else 'LOST IDS'})")

    # Which attempts were faulted, per id, as the server recorded them.
    clean = defaultdict(int)
    for arrival in arrivals:
        if arrival.fault is None:
            clean[arrival.params.get("user_id")] += 1
    outcomes = result.outcomes
    failed = outcomes[outcomes["status"] == "failed"]
    wrongly_failed = [i for i in failed["id"] if clean[i] > 0]
    print(f"failed ids: {len(failed)}, of which with an unfaulted attempt: {len(wrongly_failed)} "
          f"(must be 0); every failed id used the whole budget: "
          f"{bool((failed['attempts'] == args.max_retries + 1).all())}")
    unknown_ok = set(outcomes.loc[outcomes["status"] == "not_found", "id"]) <= {
        i for i in ids if i.startswith("nobody-")}
    print(f"not_found are exactly unknown ids: {unknown_ok}")
    faults_seen = Counter(a.fault or "none" for a in arrivals)
    print("faults injected: " + ", ".join(f"{k}={v}" for k, v in sorted(faults_seen.items())))
    distribution = Counter(outcomes["attempts"])
    print("attempts per id: " + ", ".join(f"{k}: {distribution[k]}" for k in sorted(distribution)))
    if len(failed):
        print("failures by last status: " + ", ".join(
            f"{k}: {v}" for k, v in Counter(failed["http_status"].astype("string").fillna("none")).items()))
    return 0 if total == len(set(ids)) and not wrongly_failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
