"""Message previews: parse once, render many, against a plain python-liquid loop.

10,000 profiles built from the sample org's own payloads (the home-feed set and the
user properties; 1 in 50 ids unknown to the org, as a ProfileSet lists them), one
realistic Braze message (the connected_content tag, the guard, a control-group
branch, ``${attribute}`` reads, a loop over the picks). Measured in this run:

1. ``amptools.braze.preview`` — the template parsed once and rendered per user,
   each user's call answered from their profile; best of three runs; the
   requirement is under 2 s.
2. A plain python-liquid loop doing the same work the way it is usually written:
   per user, translate the Braze syntax, parse the template and render it with the
   same environment and answers.

Prints both times, users per second, the ratio, and checks that both produced the
same messages. Then the bounds at work: a hostile template (loops that would run for
minutes) over the same users, and how long the preview takes to give every user an
error row.

Run:  .venv/bin/python benchmarks/bench_preview.py [--users 10000]
"""

from __future__ import annotations

import argparse
import time

from amptools import braze
from amptools.braze import dialect
from amptools.braze import previews as preview_module
from amptools.bulk import Outcome, ProfileSet
from amptools.models import UserProfile
from amptools.query import ProfileQuery
from amptools.sample import SampleOrg

QUERY = ProfileQuery(recs=("home-feed",), amp_props=True)
TEMPLATE = braze.connected_content(QUERY) + "\n" + braze.guard(QUERY) + """
{% assign rec = amplitude.userData.recommendations[0] %}
Hi {{${first_name} | default: 'there'}},
{% if rec.is_control %}our bestsellers are waiting for you.{% else %}new in {{${country} | default: 'your area'}}:
{% for item in rec.items limit: 3 %}{{ item | upcase }}{% unless forloop.last %}, {% endunless %}{% endfor %}{% endif %}
{{ amplitude.userData.amp_props.plan | capitalize }} plan"""


def profile_set(n_users: int) -> ProfileSet:
    org = SampleOrg()
    params = QUERY.to_params()
    outcomes = []
    for index in range(n_users):
        if index % 50 == 49:
            outcomes.append(Outcome(f"unknown-{index}", "not_found", 400, 1, "not seen before"))
            continue
        payload = org.payload(index % len(org), params)
        payload["userData"]["user_id"] = f"{payload['userData']['user_id']}-{index}"  # 10,000 distinct users
        profile = UserProfile.from_json(payload, QUERY)
        outcomes.append(Outcome(profile.user_id, "ok", 200, 1, None, profile=profile))
    return ProfileSet(outcomes, query=QUERY)


def plain_loop(profiles: ProfileSet) -> list[str]:
    """What a script would do with python-liquid alone: parse the message for every user."""
    env = dialect.environment()
    responder = preview_module._Responder(profiles.query)
    rows, _ = preview_module._rows(profiles)
    out = []
    for row in rows:
        responder.row = row
        names = {k: v for k, v in {"user_id": row.user_id, "device_id": row.device_id}.items() if v is not None}
        template = env.from_string(dialect.translate(TEMPLATE).text)  # parsed per user
        try:
            out.append(template.render({dialect.ATTRIBUTES: names, dialect.CUSTOM_ATTRIBUTES: names,
                                        dialect.RESPONDER: responder}).strip())
        except dialect.Aborted as abort:
            out.append(f"aborted: {abort.reason}")
    return out


# Sequential loops, each within the loop limit: minutes of work per message without the
# time bound.
HOSTILE = "{% for i in (1..10000) %}{% if true %}{% endif %}{% endfor %}" * 2_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    profiles = profile_set(args.users)
    print(f"{len(profiles.ids):,} users ({profiles.not_found:,} unknown to the org); template of "
          f"{TEMPLATE.count(chr(10)) + 1} lines")

    # Best of three: the machine is shared, and the first run also warms python-liquid up.
    ours = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        previews = braze.preview(TEMPLATE, profiles)
        ours = min(ours, time.perf_counter() - start)
    start = time.perf_counter()
    baseline = plain_loop(profiles)
    plain = time.perf_counter() - start

    counts = previews["status"].value_counts().to_dict()
    ours_text = [m if s == "rendered" else f"aborted: {r}"
                 for s, m, r in zip(previews["status"], previews["message"], previews["abort_reason"])]
    same = ours_text == baseline
    print(f"braze.preview (parse once, render many, best of 3): {ours:.2f} s, {len(previews) / ours:,.0f} users/s; {counts}")
    print(f"plain python-liquid loop (parse per user): {plain:.2f} s, {len(baseline) / plain:,.0f} users/s")
    print(f"plain / preview = {plain / ours:.1f}×; same messages: {same}")
    assert same, "the two ways rendered different messages"

    start = time.perf_counter()
    hostile = braze.preview(HOSTILE, profiles)
    bounded = time.perf_counter() - start
    errors = int((hostile["status"] == "error").sum())
    print(f"hostile template ({len(HOSTILE):,} characters of loops): {errors:,} of {len(hostile):,} users are "
          f"error rows in {bounded:.2f} s (bound: {dialect.LIMITS.seconds:g} s a message, then the rest "
          f"are not rendered)")
    print(f"  first: {hostile['error'].iloc[0]}")
    assert ours < 2.0 or args.users != 10_000, f"10,000 previews took {ours:.2f} s (requirement: under 2 s)"


if __name__ == "__main__":
    main()
