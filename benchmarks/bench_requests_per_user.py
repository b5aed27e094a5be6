"""Requests per user, and cells filed wrong, on a sample org shaped like a real one.

The sample org has sparse properties (UTM fields, experiment flags on 1-5% of users),
computations enabled for some users only, and text properties a merged answer cannot
tell from computations by their type. Users are asked for recommendations, properties,
cohorts, all computations and predictions, against a server of their own (a key
nothing learned before), twice: the two-request way (``split_computations=True``, the
baseline: exact, two requests per user) and the default (one merged request per user,
keys told apart by the org's names). Prints, for ``--users`` (1,000 and 100 by
default):

- requests per user of each way, and their ratio (goals: ≤ 1.02 at 1,000, ≤ 1.10 at 100);
- every cell of the properties and computations judged against what the org holds:
  right, flagged (``ambiguous``/``unverified``) or wrong (goal: 0 wrong);
- a second run with the names learned (what every later run pays).

Then how often a *partial* clash — a computation named like a property, enabled for some
users only, the one case no merged answer shows — is caught (flagged ``ambiguous``),
over ``--trials`` fresh runs each: under a number property's name (the type of a text
value gives it away) and under a text property's name (only a user asked apart does),
on 40% and on 5% of the users.

    .venv/bin/python benchmarks/bench_requests_per_user.py [--users 1000,100] [--trials 10] [--workers 16]
"""

from __future__ import annotations

import copy
import os
import warnings

from _common import parse_options
from amptools import ProfileQuery, tables
from amptools.sample import SampleOrg, SampleServer

QUERY = ProfileQuery(recs=("home-feed", "similar-items"), amp_props=True, cohort_ids=True,
                     computations=True, predictions=("0x2a7c", "0x3f1e"))
GOALS = {1000: 1.02, 100: 1.10}


def fresh_server(**options: object) -> SampleServer:
    return SampleServer(rate_limit=100_000, secret_key="bench-" + os.urandom(6).hex(), **options)  # type: ignore[arg-type]


def fetch(server: SampleServer, ids: list[str], query: ProfileQuery, workers: int):  # type: ignore[no-untyped-def]
    return server.client(rate_limit=100_000).get_profiles(ids, query, workers=workers, progress=False)


def one_size(users: int, workers: int) -> bool:
    with fresh_server() as server:
        ids = list(server.org.user_ids[1:users + 1])
        runs = {}
        for name, query in (("two requests (split_computations=True)", QUERY.split()),
                            ("one request (default), names unknown", QUERY),
                            ("one request, names learned", QUERY)):
            server.reset_arrivals()
            if name.endswith("learned"):
                ids = list(server.org.user_ids[users + 1:2 * users + 1])
            result = fetch(server, ids, query, workers)
            runs[name] = (result, len(server.arrivals), server.org.check_split(result.profiles))
    print(f"{users:,} users; recommendations, properties, cohorts, all computations, predictions")
    for name, (result, requests, verdict) in runs.items():
        print(f"  {name:<40} {requests:>6,} requests  {requests / users:.3f} per user  cells: "
              f"{verdict['right']:,} right, {verdict['flagged']:,} flagged, {verdict['wrong']} wrong")
    split_requests = runs["two requests (split_computations=True)"][1]
    merged_requests, verdict = runs["one request (default), names unknown"][1:]
    ratio = merged_requests / users
    goal = GOALS.get(users, 1.10)
    print(f"  requests per user: {split_requests / users:.3f} -> {ratio:.3f} (x{split_requests / merged_requests:.2f} "
          f"fewer); goal ≤ {goal}: {'met' if ratio <= goal else 'NOT met'}; wrong cells: {verdict['wrong']} "
          f"(goal 0: {'met' if verdict['wrong'] == 0 else 'NOT met'})")
    return ratio <= goal and all(v[2]["wrong"] == 0 for v in runs.values())


def clash_caught(users: int, name: str, share: float, trials: int, workers: int) -> tuple[int, int]:
    """In how many of ``trials`` runs a computation called ``name`` (a property's name too),
    enabled for ``share`` of the users, was flagged; and the wrong cells the missed runs left."""
    caught = wrong = 0
    for _ in range(trials):
        with fresh_server(clash=True) as server:
            definition = copy.deepcopy(server.org.definition)
            definition["clash"].update(id=name, enabled=share)
            server.org = SampleOrg(n_users=server.org.n_users, definition=definition, clash=True)
            result = fetch(server, list(server.org.user_ids[1:users + 1]), QUERY, workers)
            keys = tables.keys(result).set_index("key")
            caught += keys.loc[name, "kind"] == "ambiguous"
            wrong += server.org.check_split(result.profiles)["wrong"]
    return caught, wrong


def main(argv: list[str] | None = None) -> int:
    args = parse_options(__doc__, argv, users=("1000,100", "sizes of the runs"), trials=10, workers=16)
    warnings.simplefilter("ignore")  # the exposure note, and the keys a run flags (counted below)
    sizes = [int(n) for n in args.users.split(",")]
    ok = all([one_size(n, args.workers) for n in sizes])
    print(f"a partial clash (a computation named like a property, on some users only), {args.trials} fresh runs each:")
    for name, what in (("lifetime_value", "a number property: the type shows it"),
                       ("plan", "a text property: only a user asked apart shows it")):
        for users in sizes:
            for share in (0.4, 0.05):
                caught, wrong = clash_caught(users, name, share, args.trials, args.workers)
                print(f"  {name!r} ({what}), {users:,} users, on {share:.0%} of them: flagged in {caught} of "
                      f"{args.trials} runs ({wrong} wrong cells left by the runs that missed it)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
