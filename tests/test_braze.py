"""Connected Content: the tag, message previews over real profiles, the call plan."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest
from conftest import DOCUMENTED_QUERIES, load_sample
from hypothesis import given, settings
from hypothesis import strategies as st

import amptools as amp
from amptools import braze
from amptools.errors import InvalidQueryError
from amptools.models import UserProfile

UNKNOWN = "nobody-we-know"


def profile(name: str, query: amp.ProfileQuery) -> UserProfile:
    return UserProfile.from_json(load_sample(name), query)


def tag(query: amp.ProfileQuery, **options) -> str:
    return braze.connected_content(query, **options)


# ---------------------------------------------------------------------------- the six documented responses
P = "amplitude.userData"
REC_FIELDS = ("{{r.rec_id}}|{{r.child_rec_id}}|{{r.items | join: ','}}|{{r.is_control}}|"
              "{{r.recommendation_source}}|{{r.last_updated}}")
DOCUMENTED = {
    "one_rec": (
        amp.ProfileQuery(recs=("testRecId",)),
        f"{{% for r in {P}.recommendations %}}{REC_FIELDS};{{% endfor %}}{{{{{P}.user_id}}}} {{{{{P}.device_id}}}}",
        "testRecId|testRecId|cookie,cracker,chocolate milk,donut,croissant|false|model|1608670720;"
        "testUser ffff-ffff-ffff-ffff",
    ),
    "two_recs": (
        amp.ProfileQuery(recs=("testRecId", "testRecId2")),
        f"{{% for r in {P}.recommendations %}}{REC_FIELDS};{{% endfor %}}",
        "testRecId|testRecId|cookie,cracker,chocolate milk,donut,croissant|false|model|1608670720;"
        "testRecId2|testRecId2|bulgogi,bibimbap,kimchi,croffles,samgyeopsal|false|model2|1608670658;",
    ),
    "user_properties": (
        amp.ProfileQuery(amp_props=True),
        f"{{% assign p = {P}.amp_props %}}{{{{p.library}}}} {{{{p.first_used}}}} {{{{p.last_used}}}} "
        "{{p.number_property | plus: 1}} {{p.boolean_property}}",
        "http/1.0 2020-01-13 2021-03-24 13 true",
    ),
    "cohort_ids": (
        amp.ProfileQuery(cohort_ids=True),
        f"{{{{{P}.cohort_ids | join: ' + '}}}} ({{{{{P}.cohort_ids.size}}}})",
        "cohort1 + cohort3 + cohort7 (3)",
    ),
    "one_computation": (
        amp.ProfileQuery(computations=("computed-prop-2",)),
        f"{{{{{P}.amp_props['computed-prop-2'] | plus: 0}}}}",
        "3",
    ),
    "all_computations": (
        amp.ProfileQuery(computations=True),
        f"{{{{{P}.amp_props['computed-prop-1']}}}} and {{{{{P}.amp_props['computed-prop-2']}}}}",
        "5000000.0 and 3",
    ),
}


def test_the_documented_cases_match_the_documented_queries():
    for name, (query, _, _) in DOCUMENTED.items():
        assert query.to_params() == DOCUMENTED_QUERIES[name]


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_response_renders_every_field(name):
    query, body, expected = DOCUMENTED[name]
    template = tag(query) + "\n" + body
    result = braze.preview(template, [profile(name, query)], query=query)
    row = result.iloc[0]
    assert row["status"] == "rendered", row["error"]
    assert row["message"] == expected
    assert row["unresolved"] == ""
    assert (row["user_id"], row["device_id"]) == ("testUser", "ffff-ffff-ffff-ffff")


def test_the_answer_holds_only_what_the_tag_asks():
    # Fetched with two rec sets; the tag asks for one: Braze's answer holds that one.
    query = amp.ProfileQuery(recs=("testRecId", "testRecId2"))
    one = amp.ProfileQuery(recs=("testRecId2",))
    template = tag(one) + "{{amplitude.userData.recommendations.size}} {{amplitude.userData.recommendations[0].rec_id}}"
    row = braze.preview(template, [profile("two_recs", query)], query=query).iloc[0]
    assert row["message"] == "1 testRecId2"


# ---------------------------------------------------------------------------- the tag
QUERIES = [
    amp.ProfileQuery(recs=("testRecId",)),
    amp.ProfileQuery(recs=("home feed", "a&b", "x/y+z", "émoji-😀"), rec_type="model"),
    amp.ProfileQuery(amp_props=True, cohort_ids=True, computations=True),
    amp.ProfileQuery(amp_props=True, computations=("orders_90d", "ltv")),
    amp.ProfileQuery(predictions=("0x10x", "0x2a"), propensity_type="pct"),
    amp.ProfileQuery(recs=("r",), rec_type="random", amp_props=True, cohort_ids=True, computations=("c",),
                     predictions=("p",)),
]


@pytest.mark.parametrize("query", QUERIES, ids=range(len(QUERIES)))
@pytest.mark.parametrize("id_type", ["user_id", "device_id"])
def test_the_tag_parses_back_to_the_same_query(query, id_type):
    text = tag(query, id_type=id_type, save="result", cache_max_age=900, retry=True)
    call = braze.parse_tag(text)
    assert call.query == query
    assert call.id_type == id_type
    assert call.save == "result"
    assert call.options["cache_max_age"] == "900" and call.options["retry"] is True
    assert f"{id_type}={{{{${{{id_type}}} | url_param_escape}}}}&" in text


def test_the_url_uses_the_clients_encoding():
    from amptools.query import encode_params

    query = QUERIES[1]
    text = tag(query)
    assert "rec_id=home%20feed,a%26b,x%2Fy%2Bz,%C3%A9moji-%F0%9F%98%80" in text
    assert encode_params(query.to_params()) in text
    # Even a query asked the two-request way is one call: properties and computations merged.
    both = QUERIES[2].split()
    assert len(both.parts()) == 2
    assert "get_amp_props=true&get_cohort_ids=true&get_computations=true" in tag(both)


def test_the_key_never_appears(sample_server):
    client = sample_server.client()
    secret = sample_server.secret_key
    query = amp.ProfileQuery(recs=("home-feed",), amp_props=True)
    header_tag = tag(query)
    credential_tag = tag(query, credential="amplitude_profile_api")
    assert braze.KEY_PLACEHOLDER in header_tag and '"Authorization"' in header_tag
    assert ":auth_credentials amplitude_profile_api" in credential_tag and "Authorization" not in credential_tag
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = client.get_profiles(["testUser", sample_server.org.user_ids[5], UNKNOWN], query=query, progress=False)
    template = header_tag + "\n" + braze.guard(query) + "\n{{amplitude.userData.recommendations[0].items | join: ', '}}"
    previews = braze.preview(template, ps)
    plan = braze.call_plan(3, send_rate_per_minute=1)
    outputs = [header_tag, credential_tag, braze.guard(query), previews.to_csv(), repr(previews),
               plan.to_csv(), repr(braze.parse_tag(header_tag))]
    assert all(secret not in text for text in outputs)
    assert (previews["status"] == "rendered").sum() >= 1


@pytest.mark.parametrize("options, words", [
    ({"save": "not a name"}, "save"),
    ({"id_type": "email"}, "id_type"),
    ({"credential": "has space"}, "credential"),
    ({"cache_max_age": 60}, "cache_max_age"),
    ({"cache_max_age": 20_000}, "cache_max_age"),
])
def test_bad_tag_options_are_refused(options, words):
    with pytest.raises(InvalidQueryError, match=words):
        tag(amp.ProfileQuery(recs=("r",)), **options)


def test_a_query_asking_nothing_has_no_tag():
    with pytest.raises(InvalidQueryError, match="asks for nothing"):
        tag(amp.ProfileQuery())


def test_parse_tag_explains_what_is_wrong():
    with pytest.raises(InvalidQueryError, match="no .*connected_content"):
        braze.parse_tag("Hello")
    with pytest.raises(InvalidQueryError, match="does not call the Profile API"):
        braze.parse_tag("{% connected_content https://example.com/x :save r %}")
    with pytest.raises(InvalidQueryError, match="unknown option"):
        braze.parse_tag("{% connected_content https://profile-api.amplitude.com/v1/userprofile?get_amp_props=true :bogus 1 %}")
    call = braze.parse_tag("{% connected_content https://profile-api.amplitude.com/v1/userprofile?user_id=u&get_cohort_ids=true %}")
    assert call.save == "connected" and call.query == amp.ProfileQuery(cohort_ids=True)


# ---------------------------------------------------------------------------- the guard over the sample org
@pytest.fixture(scope="module")
def sample_profiles(sample_server):
    query = amp.ProfileQuery(recs=("home-feed",), amp_props=True, computations=True)
    ids = ["testUser", *sample_server.org.user_ids[1:120], UNKNOWN]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = sample_server.client(rate_limit=100_000).get_profiles(ids, query=query, progress=False)
    return ps


CONTROL_ABORT = """
{% if amplitude.userData.recommendations[0].is_control %}{% abort_message('control group') %}{% endif %}
Hi {{${first_name} | default: 'there'}}, picks for you: {{home_feed | join: ', '}}"""


def test_the_guard_aborts_exactly_the_users_it_should(sample_profiles):
    ps = sample_profiles
    query = amp.ProfileQuery(recs=("home-feed",))
    template = tag(query) + "\n" + braze.guard(query) + "\n" + (
        '{% assign home_feed = amplitude.userData.recommendations[0].items %}') + CONTROL_ABORT
    result = braze.preview(template, ps).set_index("user_id")
    assert len(result) == len(ps.ids)

    expected: dict[str, str] = {}
    for id_ in ps.ids:
        p = ps.get(id_)
        if p is None:
            expected[id_] = "Profile API call failed"
            continue
        rec = p.recommendation("home-feed")
        if rec is None or not rec.items:
            expected[id_] = "no home-feed recommendations"
        elif rec.is_control:
            expected[id_] = "control group"
    aborted = result[result["status"] == "aborted"]
    assert dict(aborted["abort_reason"]) == expected
    # The sample must exercise every reason, or this test proves little.
    assert set(expected.values()) == {"Profile API call failed", "no home-feed recommendations", "control group"}
    rendered = result[result["status"] == "rendered"]
    assert len(rendered) == len(ps.ids) - len(expected) > 0
    assert rendered["message"].str.startswith("Hi there, picks for you: ").all()
    assert rendered["abort_reason"].isna().all() and aborted["message"].isna().all()


def test_an_unknown_user_answers_like_the_api(sample_profiles):
    # Braze's "Local Connected Content variables" page: __http_status_code__ is added only
    # when the endpoint returns a valid JSON object and a 2XX response. The unknown user's
    # answer (a 400 from the sample org) keeps its body and gets no status.
    template = tag(amp.ProfileQuery(recs=("home-feed",))) + "{{amplitude.__http_status_code__}}: {{amplitude.error}}"
    result = braze.preview(template, sample_profiles).set_index("user_id")
    assert result.loc[UNKNOWN, "message"] == ": User id and device id not seen before"
    assert result.loc[UNKNOWN, "unresolved"] == "amplitude.__http_status_code__"
    assert result.loc["testUser", "message"] == "200:"
    assert result.loc["testUser", "unresolved"] == "amplitude.error"


def test_a_split_fetch_answers_as_one_merged_call(sample_server):
    # Fetched in two requests per user (properties, computations); Braze makes one.
    query = amp.ProfileQuery(recs=("home-feed",), amp_props=True, computations=True, split_computations=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = sample_server.client(rate_limit=100_000).get_profiles(["testUser"], query=query, progress=False)
    assert ps.query.parts()[1].canonical() == amp.ProfileQuery(computations=True).canonical()
    p = ps.get("testUser")
    assert p.raw_computations is not None
    computed = next(iter(p.computations))
    prop = next(iter(p.amp_props))
    template = (tag(amp.ProfileQuery(amp_props=True, computations=True))
                + f"{{{{amplitude.userData.amp_props['{prop}']}}}}|{{{{amplitude.userData.amp_props['{computed}']}}}}")
    row = braze.preview(template, [p], query=ps.query).iloc[0]
    assert row["message"] == f"{p.amp_props[prop]}|{p.computations[computed]}".replace("True", "true").replace(
        "False", "false")


@pytest.mark.parametrize("asked, missing", [
    (amp.ProfileQuery(recs=("email-picks",)), "rec_id email-picks"),
    (amp.ProfileQuery(cohort_ids=True), "get_cohort_ids"),
    (amp.ProfileQuery(predictions=("0x10x",)), "prediction_id 0x10x"),
    (amp.ProfileQuery(recs=("home-feed",), rec_type="model"), "rec_type=model"),
])
def test_asking_for_what_was_not_fetched_is_an_error_naming_it(sample_profiles, asked, missing):
    result = braze.preview("Hello\n" + tag(asked) + "\nbye", sample_profiles)
    assert (result["status"] == "error").all()
    assert result["error"].str.contains(missing, regex=False).all()
    assert result["error"].str.startswith("line 2: ").all()


def test_properties_asked_of_profiles_fetched_without_them_is_an_error():
    query = amp.ProfileQuery(recs=("testRecId",))
    row = braze.preview(tag(amp.ProfileQuery(amp_props=True)), [profile("one_rec", query)]).iloc[0]
    assert row["status"] == "error" and "get_amp_props" in row["error"]


# ---------------------------------------------------------------------------- attributes and unresolved
def test_attributes_fill_braze_syntax_and_empty_ones_are_listed():
    query = amp.ProfileQuery(recs=("testRecId",))
    p = profile("one_rec", query)
    template = ("Hi {{${first_name}}} ({{custom_attribute.${loyalty tier} | upcase}}), "
                "{{${user_id}}}: {{amplitude.userData.recommendations[0].items[7]}}" + tag(query))
    # The tag comes last here: variables read before it are unresolved.
    row = braze.preview(template, [p]).iloc[0]
    assert row["message"] == "Hi  (), testUser:"
    assert row["unresolved"] == ("${first_name}, custom_attribute.${loyalty tier}, "
                                 "amplitude.userData.recommendations[0].items[7]")
    table = pd.DataFrame({"user_id": ["testUser", "other"], "first_name": ["Ann", "Bob"],
                          "loyalty tier": ["gold", None]})
    before = table.copy()
    row = braze.preview(template, [p], attributes=table).iloc[0]
    assert row["message"] == "Hi Ann (GOLD), testUser:"
    pd.testing.assert_frame_equal(table, before)
    assert braze.preview("{{${first_name}}}", [p], attributes={"testUser": {"first_name": "Cy"}}).loc[0, "message"] == "Cy"


def test_text_outside_liquid_keeps_the_dollar_syntax():
    p = profile("one_rec", amp.ProfileQuery(recs=("testRecId",)))
    assert braze.preview("costs ${price}, {{ 'a' | upcase }}", [p]).loc[0, "message"] == "costs ${price}, A"


def test_ids_with_any_character_round_trip_through_url_param_escape():
    body = load_sample("one_rec")
    body["userData"]["user_id"] = "a b&c+d/é,😀"
    p = UserProfile.from_json(body, amp.ProfileQuery(recs=("testRecId",)))
    template = tag(amp.ProfileQuery(recs=("testRecId",))) + "{{amplitude.userData.recommendations[0].items[0]}}"
    row = braze.preview(template, [p]).iloc[0]
    assert (row["status"], row["message"]) == ("rendered", "cookie")


def test_a_url_for_another_user_is_an_error():
    p = profile("one_rec", amp.ProfileQuery(recs=("testRecId",)))
    template = "{% connected_content https://profile-api.amplitude.com/v1/userprofile?user_id=someone&get_recs=true&rec_id=testRecId %}"
    row = braze.preview(template, [p]).iloc[0]
    assert row["status"] == "error" and "'someone'" in row["error"]


def test_without_save_the_answer_is_in_connected():
    p = profile("cohort_ids", amp.ProfileQuery(cohort_ids=True))
    template = tag(amp.ProfileQuery(cohort_ids=True)).replace(" :save amplitude", "") + "{{connected.userData.cohort_ids[1]}}"
    assert braze.preview(template, [p]).loc[0, "message"] == "cohort3"


def test_braze_filters():
    p = profile("one_rec", amp.ProfileQuery(recs=("testRecId",)))
    template = """{{ 'a b&c/é' | url_param_escape }} {{ 'say "hi"\n' | json_escape }}"""
    assert braze.preview(template, [p]).loc[0, "message"] == 'a%20b%26c%2F%C3%A9 say \\"hi\\"\\n'


# ---------------------------------------------------------------------------- errors never escape
@pytest.mark.parametrize("template, line, words", [
    ("Hi\n\n{% if %}yes{% endif %}", 3, "missing expression"),
    ("Hi\n{{ 10 | divided_by: 0 }}", 2, "divide by 0"),
    ("Hi\n{{ 'x' | no_such_filter }}", 2, "no_such_filter"),
    ("a\nb\n{% abort_message(reason) %}", 3, "quoted reason"),
    ("{% for x in (1..3) %}\n{{ x }}", "2 (end of the template)", "endfor"),
    ("\n{% connected_content :save x %}", 2, "URL"),
    ("{% connected_content https://profile-api.amplitude.com/v1/userprofile?user_id={{ x | nope }} %}", 1, "nope"),
])
def test_liquid_errors_are_rows_with_the_line(template, line, words):
    p = profile("one_rec", amp.ProfileQuery(recs=("testRecId",)))
    result = braze.preview(template, [p, p])
    assert (result["status"] == "error").all()
    error = result.loc[0, "error"]
    assert error.startswith(f"line {line}: ") and words in error, error
    assert result["message"].isna().all()


def test_abort_message_forms():
    p = profile("one_rec", amp.ProfileQuery(recs=("testRecId",)))
    # liquid/aborting_messages.md: without a reason Braze logs "{% abort_message %} called".
    for text, reason in (("{% abort_message() %}", "{% abort_message %} called"),
                         ("{% abort_message %}", "{% abort_message %} called"),
                         ('before{% abort_message("why not") %}after', "why not")):
        row = braze.preview(text, [p]).iloc[0]
        assert (row["status"], row["abort_reason"], row["message"]) == ("aborted", reason, row["message"])
        assert pd.isna(row["message"])


def test_empty_input_keeps_columns_and_dtypes():
    result = braze.preview("hi", [])
    assert list(result.columns) == list(braze.PREVIEW_COLUMNS) and len(result) == 0
    assert all(str(dtype) == "str" for dtype in result.dtypes)


def test_bad_arguments_are_amptools_errors():
    with pytest.raises(InvalidQueryError, match="ProfileSet or a list"):
        braze.preview("hi", 3)
    with pytest.raises(InvalidQueryError, match="UserProfile"):
        braze.preview("hi", [{"userData": {}}])
    with pytest.raises(InvalidQueryError, match="user_id column"):
        braze.preview("hi", [], attributes=pd.DataFrame({"name": ["x"]}))


def test_sort_for_review_puts_what_needs_a_look_first():
    frame = pd.DataFrame({"user_id": list("abcde"), "status": ["rendered", "aborted", "rendered", "error", "aborted"],
                          "unresolved": ["", pd.NA, "${x}", pd.NA, pd.NA]})
    ordered = braze.sort_for_review(frame)
    assert list(ordered["user_id"]) == ["d", "b", "e", "c", "a"]
    assert list(frame["user_id"]) == list("abcde")


# ---------------------------------------------------------------------------- the call plan
def test_call_plan_distinct_users():
    # 5 users at 2 a minute, 2 renders each: minutes of 2, 2 and 1 messages.
    plan = braze.call_plan(5, send_rate_per_minute=2, renders_per_message=2, other_calls_per_minute=10, limit=20)
    assert list(plan.columns) == list(braze.CALL_PLAN_COLUMNS)
    assert plan["messages"].tolist() == [2, 2, 1]
    assert plan["renders"].tolist() == [4, 4, 2]
    assert plan["cache_hits"].tolist() == [0, 0, 0]
    assert plan["api_calls"].tolist() == [4, 4, 2]
    assert plan["total_calls"].tolist() == [14, 14, 12]
    assert plan["share_of_limit"].tolist() == [0.7, 0.7, 0.6]
    assert plan["exposure_events"].sum() == 10
    assert not plan["throttled"].any()
    assert plan.attrs["recommended_rate"] == 5  # (20 - 10) // 2


def test_call_plan_cache_hits_for_repeated_users():
    # At 2 a minute message k leaves at 30k seconds. "a" again at 60 s: a hit (2 renders);
    # "a" again at 420 s: 360 s after its last call, past 300 s: it calls again.
    ids = ["a", "b", "a", "c", "d", "e", "f", "g", "h", "i", "j", "k", "m", "n", "a"]
    plan = braze.call_plan(ids, send_rate_per_minute=2, renders_per_message=2, cache_max_age=300)
    assert plan["messages"].tolist() == [2, 2, 2, 2, 2, 2, 2, 1]
    assert plan["cache_hits"].tolist() == [0, 2, 0, 0, 0, 0, 0, 0]
    assert plan["api_calls"].tolist() == [4, 2, 4, 4, 4, 4, 4, 2]
    nocache = braze.call_plan(ids, send_rate_per_minute=2, renders_per_message=2, cache_max_age=None)
    assert nocache["cache_hits"].sum() == 0 and nocache["api_calls"].sum() == 30


def test_call_plan_a_limit_crossed_in_one_minute_only():
    # 5 users at 4 a minute, 2 renders: 8 calls then 2; a limit of 6 is crossed in minute 0 only.
    plan = braze.call_plan(5, send_rate_per_minute=4, renders_per_message=2, limit=6)
    assert plan["total_calls"].tolist() == [8, 2]
    assert plan["throttled"].tolist() == [True, False]
    assert plan["over_limit"].tolist() == [2, 0]
    assert plan.attrs["throttled_minutes"] == 1
    assert plan.attrs["recommended_rate"] == 3
    safe = braze.call_plan(5, send_rate_per_minute=plan.attrs["recommended_rate"], renders_per_message=2, limit=6)
    assert not safe["throttled"].any()


def test_call_plan_large_send_and_empty_audience():
    plan = braze.call_plan(500_000, send_rate_per_minute=300, renders_per_message=2, other_calls_per_minute=60)
    assert len(plan) == 1667 and plan["messages"].sum() == 500_000
    # 300 * 2 + 60 = 660 calls a minute: every full minute is over; the last (200 messages) is not.
    assert plan["throttled"].sum() == 1666 and plan["over_limit"].iloc[0] == 60
    assert plan.attrs["recommended_rate"] == 270
    safe = braze.call_plan(500_000, send_rate_per_minute=270, renders_per_message=2, other_calls_per_minute=60)
    assert not safe["throttled"].any() and safe["share_of_limit"].max() == 1.0
    empty = braze.call_plan(0, send_rate_per_minute=10)
    assert len(empty) == 0 and list(empty.dtypes.astype(str)) == [
        "int64", "int64", "int64", "int64", "int64", "int64", "int64", "float64", "bool", "int64", "int64"]


@pytest.mark.parametrize("kwargs", [
    {"audience": 10, "send_rate_per_minute": 0},
    {"audience": -1, "send_rate_per_minute": 10},
    {"audience": "abc", "send_rate_per_minute": 10},
    {"audience": 10, "send_rate_per_minute": 10, "renders_per_message": 0},
    {"audience": 10, "send_rate_per_minute": 10, "limit": True},
])
def test_call_plan_refuses_bad_input(kwargs):
    with pytest.raises(InvalidQueryError):
        braze.call_plan(**kwargs)


def test_recommended_rate():
    assert braze.recommended_rate(renders_per_message=2) == 300
    assert braze.recommended_rate(renders_per_message=3, other_calls_per_minute=54) == 182
    assert braze.recommended_rate(other_calls_per_minute=700) == 0


def test_starter_template_renders_for_the_documented_user():
    query = amp.ProfileQuery(recs=("testRecId", "testRecId2"))
    text = braze.starter_template(query, credential="amp")
    assert braze.parse_tag(text).query == query and ":auth_credentials amp" in text
    row = braze.preview(text, [profile("two_recs", query)], attributes={"testUser": {"first_name": "Ann"}}).iloc[0]
    assert row["message"] == "Hi Ann,\npicked for you: cookie, cracker, chocolate milk."
    assert row["unresolved"] == ""


def test_failed_fetches_save_no_answer():
    # Braze's "Local Connected Content variables": __http_status_code__ only for a JSON object
    # with a 2XX status. A failed call (a 503, or no answer at all) saves nothing a template
    # could test a status on; the guard aborts on the missing body.
    from amptools.bulk import Outcome, ProfileSet

    query = amp.ProfileQuery(recs=("testRecId",))
    ok = profile("one_rec", query)
    ps = ProfileSet([Outcome("testUser", "ok", 200, 1, profile=ok),
                     Outcome("slow", "failed", 503, 5, "the Profile API failed (HTTP 503)"),
                     Outcome("reset", "failed", None, 5, "the connection failed")], query=query)
    template = tag(query) + "{{amplitude.__http_status_code__ | default: 'no answer'}}"
    result = braze.preview(template, ps)
    assert result["user_id"].tolist() == ["testUser", "slow", "reset"]
    assert result["message"].tolist() == ["200", "no answer", "no answer"]
    guarded = braze.preview(tag(query) + braze.guard(query) + "sent", ps)
    assert guarded["status"].tolist() == ["rendered", "aborted", "aborted"]
    assert guarded["abort_reason"].tolist()[1:] == ["Profile API call failed"] * 2


def test_device_id_tags_are_answered_by_device():
    query = amp.ProfileQuery(cohort_ids=True)
    p = profile("cohort_ids", query)
    template = tag(query, id_type="device_id") + "{{amplitude.userData.device_id}}: {{amplitude.userData.cohort_ids | join: ','}}"
    assert braze.preview(template, [p]).loc[0, "message"] == "ffff-ffff-ffff-ffff: cohort1,cohort3,cohort7"


def test_null_values_count_as_unresolved():
    body = load_sample("user_properties")
    body["userData"]["amp_props"]["city"] = None
    query = amp.ProfileQuery(amp_props=True)
    p = UserProfile.from_json(body, query)
    template = tag(query) + ("Hi from {{amplitude.userData.amp_props.city}}"
                             "{% if amplitude.userData.amp_props.city == nil %} (nil){% endif %}"
                             "{% if amplitude.userData.cohort_ids == nil %} (no cohorts){% endif %}")
    row = braze.preview(template, [p]).iloc[0]
    assert row["message"] == "Hi from  (nil) (no cohorts)"
    assert row["unresolved"] == "amplitude.userData.amp_props.city"


def test_call_plan_counts_an_email_with_an_amp_part():
    # Braze renders an email's HTML, plain text and AMP part, each calling (MARKETING_APIS:
    # "plan for 2–3 calls per message"): the default is the worst case, 3.
    plan = braze.call_plan(10, send_rate_per_minute=10)
    assert plan["renders"].tolist() == [30] and plan["api_calls"].tolist() == [30]
    assert braze.recommended_rate() == 200 == plan.attrs["recommended_rate"]


def test_call_plan_memory_follows_the_minutes_not_the_audience():
    import tracemalloc

    tracemalloc.start()
    try:
        plan = braze.call_plan(10**7, send_rate_per_minute=10**6)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan) == 10 and plan["messages"].sum() == 10**7
    assert peak < 1_000_000  # ten minutes of counts, not ten million users

    # Ids in send order, streamed: only the users inside one cache window are kept.
    tracemalloc.start()
    try:
        ids = (f"user-{k % 300_000}" for k in range(600_000))
        plan = braze.call_plan(ids, send_rate_per_minute=1_000, renders_per_message=2, cache_max_age=300)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(plan) == 600 and plan["cache_hits"].sum() == 0  # every repeat is past the 5-minute window
    assert peak < 5_000_000


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("abcdef"), max_size=60), st.integers(1, 7), st.sampled_from([None, 0, 30, 60, 300]))
def test_call_plan_cache_matches_the_rule(ids, rate, cache_max_age):
    # The rule, written the plain way: a user is a hit when their last call is within cache_max_age.
    last: dict[str, float] = {}
    hits = [0] * (-(-len(ids) // rate))
    for k, user in enumerate(ids):
        when = 60.0 * k / rate
        if cache_max_age and user in last and when - last[user] <= cache_max_age:
            hits[k // rate] += 2
        else:
            last[user] = when
    plan = braze.call_plan(ids, send_rate_per_minute=rate, renders_per_message=2, cache_max_age=cache_max_age)
    assert plan["cache_hits"].tolist() == hits
