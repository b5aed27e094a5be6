"""Braze's Liquid in the preview: its syntax, its filters and tags, its status and abort rules, its bounds.

Every case is built from an example or a rule of Braze's documentation, named by its page
(repository ``braze-inc/braze-docs``, under
``_docs/_user_guide/personalization_and_dynamic_content/``), so a failure says which of
Braze's promises the preview broke.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pandas as pd
import pytest
from conftest import load_sample

import amptools as amp
from amptools import braze
from amptools.models import UserProfile

QUERY = amp.ProfileQuery(recs=("testRecId",))
TAG = braze.connected_content(QUERY)


def profile() -> UserProfile:
    return UserProfile.from_json(load_sample("one_rec"), QUERY)


def render(template: str, **attributes: object) -> pd.Series:
    return braze.preview(template, [profile()], attributes={"testUser": attributes}).iloc[0]


def rendered(template: str, **attributes: object) -> str:
    row = render(template, **attributes)
    assert row["status"] == "rendered", row["error"]
    return str(row["message"])


# ---------------------------------------------------------------------------- 1. {{ }} inside tags
# liquid/using_liquid.md, "Exceptions for double brackets": "If using a tag within another
# Liquid tag ... you can use either double brackets or no brackets. The following tags are
# all correct."
@pytest.mark.parametrize("template", [
    "{% if custom_attribute.${Number_Game_Attended} == 1 %}yes{% endif %}",
    "{% if {{custom_attribute.${Number_Game_Attended}}} == 1 %}yes{% endif %}",
    "{% assign value_one = {{custom_attribute.${one}}} %}{% if value_one == 1 %}yes{% endif %}",
    "{% assign value_one = custom_attribute.${one} %}{% if value_one == 1 %}yes{% endif %}",
])
def test_double_brackets_inside_a_tag_are_correct(template):
    assert rendered(template, Number_Game_Attended=1, one=1) == "yes"


def test_an_output_as_a_filter_argument_stands_for_its_value():
    # liquid/using_liquid.md, "Correct Liquid example" and "Tutorial: Using variables to
    # calculate a balance" (also liquid/filters.md): "You have $35 to spend!".
    assert rendered("{% assign value_one = {{custom_attribute.${one}}} %}"
                    "{% assign result = value_one | plus: {{custom_attribute.${two}}} %}{{result}}",
                    one=3, two=4) == "7"
    assert rendered("{% assign balance = {{custom_attribute.${current_rewards_balance}}} %}\n"
                    "You have ${{custom_attribute.${giftcard_balance} | plus: {{balance}}}} to spend!",
                    current_rewards_balance=10, giftcard_balance=25) == "You have $35 to spend!"


def test_an_output_with_filters_inside_a_tag_is_evaluated_first():
    # liquid/supported_personalization_tags.md, "Variable tags".
    template = ("{% assign new_points_balance = {{custom_attribute.${current_rewards_balance} | plus: 50}} %}\n"
                "{% if new_points_balance >= 100 %}\n"
                "Make a purchase to bring your rewards points to {{new_points_balance}} and cash in today!\n"
                "{% else %}\n{% abort_message('not enough points') %}\n{% endif %}")
    assert rendered(template, current_rewards_balance=60) == (
        "Make a purchase to bring your rewards points to 110 and cash in today!")
    row = render(template, current_rewards_balance=10)
    assert (row["status"], row["abort_reason"]) == ("aborted", "not enough points")
    # And as a filter argument in the middle of a chain: a + (b + 1), not (a + b) + 1 twice.
    assert rendered("{{ custom_attribute.${a} | plus: {{ custom_attribute.${b} | plus: 1 }} | times: 2 }}",
                    a=1, b=2) == "8"


def test_the_documented_iteration_example():
    # liquid/supported_personalization_tags.md, "Iteration tags".
    template = ("{% for items in {{custom_attribute.${Brands Viewed}}} limit:5 %}\n"
                "{% if {{items}} contains 'Converse' %}\n{% assign converse_viewer = true %}\n{% endif %}\n"
                "{% endfor %}\n{% if converse_viewer == true %}\nSale on Converse!\n{% else %}\n"
                "{% abort_message() %}\n{% endif %}")
    assert rendered(template, **{"Brands Viewed": ["Nike", "Converse"]}) == "Sale on Converse!"
    assert render(template, **{"Brands Viewed": ["Nike"]})["status"] == "aborted"


# connected_content/local_connected_content_variables.md: the weather example, with the
# page's JSON as the saved answer.
WEATHER = json.dumps({"consolidated_weather": [{"weather_state_name": "Clear"}], "title": "New York"})
WEATHER_TEMPLATE = (
    "{% if {{localweather.consolidated_weather[0].weather_state_name}} == 'Rain' %}\n"
    "It's raining! Grab an umbrella!\n"
    "{% elsif {{localweather.consolidated_weather[0].weather_state_name}} == 'Clouds' %}\n"
    "No sunscreen needed :)\n{% else %}\nEnjoy the weather!\n{% endif %}")


@pytest.mark.parametrize("state, message", [("Rain", "It's raining! Grab an umbrella!"),
                                            ("Clouds", "No sunscreen needed :)"), ("Clear", "Enjoy the weather!")])
def test_the_documented_weather_example(state, message):
    answer = WEATHER.replace("Clear", state)
    assign = f"{{% assign localweather = '{answer}' | json_parse %}}"
    assert rendered(assign + WEATHER_TEMPLATE) == message
    assert rendered(assign + "{{localweather.title}}") == "New York"


def test_parse_tag_and_preview_read_outputs_inside_the_tag():
    # connected_content/making_an_api_call.md: "{{token_response}}" inside :headers.
    template = ("{% if {{custom_attribute.${plan}}} == 'free' %}{% abort_message('free plan') %}{% endif %}\n"
                "{% connected_content https://profile-api.amplitude.com/v1/userprofile?"
                "user_id={{${user_id} | url_param_escape}}&get_recs=true&rec_id=testRecId "
                ':headers {"Authorization": "{{custom_attribute.${token}}}"} :save amplitude %}\n'
                "{{amplitude.userData.recommendations[0].items[0]}}")
    call = braze.parse_tag(template)
    assert call.query == QUERY and call.options["headers"] == {"Authorization": "{{custom_attribute.${token}}}"}
    assert rendered(template, plan="paid", token="t") == "cookie"
    assert render(template, plan="free")["abort_reason"] == "free plan"


def test_an_unclosed_output_is_an_error_with_its_line():
    # liquid/using_liquid.md, "Liquid syntax": "Brackets come in pairs".
    row = render("Hi\n{{ ${first_name}\nbye")
    assert row["status"] == "error" and row["error"].startswith("line 2: '{{' is never closed")


# ---------------------------------------------------------------------------- 2. __http_status_code__
@pytest.mark.parametrize("retry, reason", [(False, "Profile API call failed"), (True, "unknown user")])
@pytest.mark.parametrize("status", [None, 200, 400])
def test_the_guard_aborts_on_the_unknown_user_body_whatever_its_status(status, retry, reason):
    # The Profile API documents the unknown-user body, not its status; Braze adds
    # __http_status_code__ only to a 2XX answer (local_connected_content_variables.md).
    answer: dict[str, object] = {"error": braze.UNKNOWN_USER_BODY}
    if status is not None:
        answer["__http_status_code__"] = status
    template = (f"{{% assign amplitude = '{json.dumps(answer)}' | json_parse %}}"
                + braze.guard(QUERY, retry=retry) + "sent")
    row = render(template)
    assert (row["status"], row["abort_reason"]) == ("aborted", reason)


def test_the_status_is_only_on_a_2xx_answer(sample_server):
    # local_connected_content_variables.md: the key is added only for a valid JSON object
    # and a 2XX response; the sample org answers the unknown user with a 400.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ps = sample_server.client().get_profiles(["testUser", "nobody-we-know"], query=amp.ProfileQuery(
            recs=("home-feed",)), progress=False)
    tests = ("{% if amplitude.__http_status_code__ == 400 %}400{% endif %}"
             "{% if amplitude.__http_status_code__ >= 400 %}>=400{% endif %}"
             "{% if amplitude.__http_status_code__ == 200 %}200{% endif %}|{{amplitude.error}}")
    result = braze.preview(braze.connected_content(amp.ProfileQuery(recs=("home-feed",))) + tests, ps)
    assert result["message"].tolist() == ["200|", "|User id and device id not seen before"]


# ---------------------------------------------------------------------------- 3. Braze's own filters
# liquid/advanced_filters.md, "Encoding filters", "URL filters", "Number formatting filters":
# every example input with its documented output.
@pytest.mark.parametrize("template, output", [
    ("{{'hey' | md5}}", "6057f13c496ecf7fd777ceb9e79ae285"),
    ("{{'hey' | sha1}}", "7f550a9f4c44173a37664d938f1355f0f92a47a7"),
    ("{{'hey' | sha2}}", "fa690b82061edfd2852629aeba8a8977b57e40fcb77d1a7a28b26cba62591204"),
    ("{{'blah' | base64_encode}}", "YmxhaA=="),
    ("{{'hey' | hmac_sha1_hex: 'secret_key'}}", "2a3969bed25bfeefb00aca4063eb9590b4df8f0e"),
    ("{{'hey' | hmac_sha1: 'secret_key'}}", "2a3969bed25bfeefb00aca4063eb9590b4df8f0e"),
    ("{{'hey' | hmac_sha1_base64: 'secret_key'}}", "KjlpvtJb/u+wCspAY+uVkLTfjw4="),
    ("{{'hey' | hmac_sha256_hex: 'secret_key'}}", "8df897f8da3d7992fe57c8dbc6f27578cfbf2dcc4d0fbb4000b8c924841d508e"),
    ("{{'hey' | hmac_sha256_base64: 'secret_key'}}", "jfiX+No9eZL+V8jbxvJ1eM+/LcxND7tAALjJJIQdUI4="),
    ("{{'hey<>hi' | url_escape}}", "hey%3C%3Ehi"),
    ("{{'hey<&>hi' | url_param_escape}}", "hey%3C%26%3Ehi"),
    ("{{ 'google search' | url_encode }}", "google+search"),
    ("{{ 123456 | number_with_delimiter }}", "123,456"),
])
def test_the_documented_advanced_filters(template, output):
    assert rendered(template) == output


def test_the_documented_money_filter():
    # liquid/filters.md, "Money filters": two decimals, no currency symbol of its own
    # ("$17.80", "$145.00", "$1.45"); the thousands separator is assumed (the page shows
    # no output for "350000.25").
    assert rendered("${{custom_attribute.${account_balance} | money}}", account_balance=17.8) == "$17.80"
    assert rendered("${{custom_attribute.${rewards_redeemed} | money }}", rewards_redeemed=145) == "$145.00"
    assert rendered("${{custom_attribute.${rewards_redeemed} | divided_by: 100.00 | money }}",
                    rewards_redeemed=145) == "$1.45"
    assert rendered('{% assign my_int = "350000.25" | plus: 0 %}\n{{ my_int | money }}') == "350,000.25"
    assert rendered('{{ "350000.25" | plus: 0 | money }}') == "350,000.25"


def test_the_documented_hash_and_json_filters():
    # liquid/advanced_filters.md, "Property accessor filter" ({"a" => 42, "b" => 0}) and
    # "JSON formatting filters" (json_parse, as_json_string).
    assert rendered("{% assign hash = '{\"a\": 42, \"b\": 0}' | json_parse %}{{hash | property_accessor: 'a'}}") == "42"
    assert rendered("{% assign key = custom_attribute.${key} %}{% assign hash = '{\"a\": 42, \"b\": 0}' | json_parse %}"
                    "{{hash | property_accessor: key}}", key="b") == "0"
    data = """{% assign my_data_string = '[{"id":"1","store_name":"demo-store"}]'  %}
{% assign my_data = my_data_string | json_parse %}"""
    assert rendered(data + "{% for item in my_data %}Item ID: {{ item.id }}\nItem Name: {{ item.store_name }}"
                           "{% endfor %}") == "Item ID: 1\nItem Name: demo-store"
    assert rendered(data + "{% assign json_string = my_data | as_json_string %}{{json_string}}") == (
        '[{"id":"1","store_name":"demo-store"}]')


def test_the_documented_time_zone_filter():
    # liquid/filters.md, "Time zone filter": 2021-08-04 9:00:00 UTC in Los Angeles is 2:00.
    # (The page prints "Wed August 4 2:00:00"; strftime's %b and %T print "Aug" and "02".)
    assert rendered("{{custom_attribute.${date_attribute} | time_zone: 'America/Los_Angeles' | date: '%a %b %e %T' }}",
                    date_attribute="2021-08-04 9:00:00 UTC") == "Wed Aug  4 02:00:00"
    row = render("{{ 'now' | time_zone: 'Mars/Olympus' }}")
    assert row["status"] == "error" and "unknown time zone" in row["error"]


@pytest.mark.parametrize("template, output", [
    ('{{"Big Sale" | upcase}}', "BIG SALE"),  # liquid/filters.md, "Filter syntax"
    ('{{ "Big Sale" | upcase | remove: "BIG" }}', "SALE"),
    ("{{15 | divided_by: 2}}", "7"),  # liquid/filters.md, "Math filters" tip
    ("{{15 | divided_by: 2.0}}", "7.5"),
    ('{{ "Have <em>you</em> read <strong>Ulysses</strong>?" | strip_html }}', "Have you read Ulysses?"),
])
def test_the_documented_standard_filters(template, output):
    assert rendered(template) == output


# ---------------------------------------------------------------------------- 4. unsupported filters
@pytest.mark.parametrize("name", ["lstrip", "rstrip", "pluralize", "camelize", "camelcase", "handleize",
                                  "money_with_currency", "money_without_currency", "format_address", "color_to_rgb"])
def test_filters_braze_marks_unsupported_are_errors(name):
    # liquid/filters.md marks these "No".
    row = render(f"Hi\n{{{{ 'x' | {name} }}}}")
    assert row["status"] == "error"
    assert row["error"].startswith(f"line 2: Braze does not support the filter '{name}'")
    assert "liquid/filters.md" in row["error"]


@pytest.mark.parametrize("name", ["find_index", "url_decode", "sum", "squish"])
def test_filters_braze_does_not_list_are_errors(name):
    row = render(f"{{{{ 'x' | {name} }}}}")
    assert row["status"] == "error" and f"does not list the filter '{name}'" in row["error"]


def test_the_support_table_is_the_one_source():
    from amptools.braze import dialect

    env = dialect.environment()
    for name, support in dialect.FILTERS.items():
        assert support.source.startswith(("liquid/filters.md", "liquid/advanced_filters.md")), name
        assert name in env.filters
    # Every filter the engine has is in the table, or refused as unlisted.
    for name in env.filters:
        if name not in dialect.FILTERS:
            assert render(f"{{{{ 'x' | {name} }}}}")["status"] == "error", name
    for name, support in dialect.TAGS.items():
        assert support.supported and support.source.startswith(("liquid/", "connected_content/")), name


@pytest.mark.parametrize("template, words", [
    ("{% ifchanged %}x{% endifchanged %}", "does not list the tag 'ifchanged'"),
    ("{% include 'x' %}", "does not list the tag 'include'"),
    ("{% render 'x' %}", "content stored in Braze"),
    ("{% doc %}x{% enddoc %}", "does not list the tag 'doc'"),
])
def test_tags_braze_does_not_support_are_errors(template, words):
    row = render(template)
    assert row["status"] == "error" and words in row["error"]


# ---------------------------------------------------------------------------- 7. :retry and the guard
def test_a_guard_that_aborts_on_a_failed_call_is_warned_about_with_retry():
    # connected_content/connected_content_retries.md: when the abort logic tests what the
    # retry logic tests, the abort takes precedence and no retry happens.
    template = braze.connected_content(QUERY, retry=True) + braze.guard(QUERY) + "{{ 'sent' }}"
    with pytest.warns(braze.RetryAbortWarning, match="instead of retrying"):
        braze.preview(template, [profile()])
    starter = braze.starter_template(QUERY, retry=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", braze.RetryAbortWarning)
        assert braze.preview(starter, [profile()]).loc[0, "status"] == "rendered"
        fixed = braze.connected_content(QUERY, retry=True) + braze.guard(QUERY, retry=True) + "sent"
        assert braze.preview(fixed, [profile()]).loc[0, "status"] == "rendered"


def test_a_failed_retried_call_ends_as_braze_ends_it():
    # connected_content_retries.md: "If the Connected Content call errors out over five
    # times, the message is aborted"; an abort of the template's own comes first.
    from amptools.bulk import Outcome, ProfileSet

    ps = ProfileSet([Outcome("testUser", "ok", 200, 1, profile=profile()),
                     Outcome("slow", "failed", 503, 5, "the Profile API failed (HTTP 503)")], query=QUERY)
    retried = braze.connected_content(QUERY, retry=True)
    result = braze.preview(retried + braze.guard(QUERY, retry=True) + "sent", ps)
    assert result["status"].tolist() == ["rendered", "aborted"]
    assert "retries it" in result.loc[1, "abort_reason"]
    with pytest.warns(braze.RetryAbortWarning):
        first = braze.preview(retried + braze.guard(QUERY) + "sent", ps)
    assert first.loc[1, "abort_reason"] == "Profile API call failed"


# ---------------------------------------------------------------------------- 8. abort_message
@pytest.mark.parametrize("template", ["{% abort_message %}", "{% abort_message() %}"])
def test_abort_without_a_reason_logs_what_braze_logs(template):
    # liquid/aborting_messages.md: Braze logs "{% abort_message %} called".
    row = render("{% if ${language} == 'en' %}\nSend this message in English!\n{% else %}\n" + template + "\n{% endif %}")
    assert (row["status"], row["abort_reason"]) == ("aborted", "{% abort_message %} called")


# ---------------------------------------------------------------------------- the documented examples
# Every Liquid example of Braze's Liquid and Connected Content pages that uses only what a
# profile and its attributes can answer, with its documented (or evident) output.
ATTRIBUTES = {"first_name": "Janet", "language": "en", "Number_Game_Attended": 1, "balance": 12}
DOCUMENTED = [
    # liquid/using_liquid.md, "How it works"
    ("Hi {{ ${first_name} | default: 'Valued User' }}, thanks for using the App!", ATTRIBUTES,
     "Hi Janet, thanks for using the App!"),
    ("Hi {{ ${first_name} | default: 'Valued User' }}, thanks for using the App!", {},
     "Hi Valued User, thanks for using the App!"),
    # liquid/supported_personalization_tags.md, accounting for null values
    ("{% if ${first_name} != blank and ${first_name} != null %}\nHello {{${first_name} | default: 'there'}}, "
     "thanks for downloading!\n{% else %}\nThanks for downloading!\n{% endif %}", ATTRIBUTES,
     "Hello Janet, thanks for downloading!"),
    ("{% if ${first_name} != blank and ${first_name} != null %}\nHello {{${first_name} | default: 'there'}}, "
     "thanks for downloading!\n{% else %}\nThanks for downloading!\n{% endif %}", {}, "Thanks for downloading!"),
    ("{% if {{custom_attribute.${balance}}} > 0 %}\nYour rewards balance is {{custom_attribute.${balance}}}\n"
     "{% else %}\n{% abort_message() %}\n{% endif %}", ATTRIBUTES, "Your rewards balance is 12"),
    # liquid/supported_personalization_tags.md, language
    ("{% if ${language} == 'en' %}\nMessage in English\n{% elsif  ${language} == 'fr' %}\nMessage in French\n"
     "{% else %}\nMessage in default language\n{% endif %}", ATTRIBUTES, "Message in English"),
    # liquid/advanced_filters.md, URL filters tip
    ('{% assign url = "https://www.examplelink.com" %}\n<a href=\'{{url}}\'>Click this Link!</a>', {},
     "<a href='https://www.examplelink.com'>Click this Link!</a>"),
    # connected_content/local_connected_content_variables.md, HTTP status codes (a 2XX answer)
    (TAG.replace(":save amplitude", ":save result") + "\n{% if result.__http_status_code__ != 200 %}\n"
     "  {% abort_message('Connected Content returned a non-200 status code') %}\n{% endif %}ok", {}, "ok"),
    # connected_content/aborting_connected_content.md
    (TAG.replace(":save amplitude", ":save connected") + "\n   {% if connected.userData.recommendations.size < 1 "
     "or connected.foo.bar == nil %}\n     {% abort_message() %}\n   {% endif %}", {}, None),
]


@pytest.mark.parametrize("template, attributes, message", DOCUMENTED)
def test_the_documented_examples_render(template, attributes, message):
    row = braze.preview(template, [profile()], attributes={"testUser": attributes}).iloc[0]
    if message is None:
        assert row["status"] == "aborted"
    else:
        assert (row["status"], row["message"]) == ("rendered", message), row["error"]


# ---------------------------------------------------------------------------- bounds (issue 18, item 6)
@pytest.mark.timeout(30)
@pytest.mark.parametrize("template, words", [
    ("{% for a in (1..100000) %}{% for b in (1..100000) %}x{% endfor %}{% endfor %}", "loops more than"),
    ("{% assign s = 'x' %}{% for i in (1..26) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}",
     "grew past"),
    ("{% assign x = 'aaaaaaaaaa' %}{% for i in (1..12) %}{% assign x = x | append: x %}{% endfor %}"
     "{{ x | replace: 'a', x }}", "would grow past"),
    ("{{" * 20_000, "never closed"),
    ("{{" + " " * 40_000, "never closed"),
    ("{% raw %}" * 5_000, "never closed"),
    ("x" * 500_001, "at most 500,000"),
])
def test_hostile_templates_are_error_rows(template, words):
    result = braze.preview(template, [profile()] * 3)
    assert (result["status"] == "error").all()
    assert result["error"].str.contains(words, regex=False).all(), result.loc[0, "error"]


@pytest.mark.timeout(60)
def test_a_template_that_runs_too_long_stops_the_preview(monkeypatch):
    from amptools.braze import dialect

    monkeypatch.setattr(dialect, "LIMITS", dataclasses.replace(dialect.LIMITS, seconds=0.05))
    slow = "{% for i in (1..10000) %}" + "{% if true %}{% endif %}" * 200 + "{% endfor %}" * 1
    result = braze.preview(slow * 40, [profile()] * 20)
    assert (result["status"] == "error").all()
    assert "longer than 0.05 s" in result.loc[0, "error"]
    assert result["error"].iloc[1:].str.startswith("not rendered: the message for 'testUser'").all()


@pytest.mark.timeout(30)
def test_parse_tag_is_linear():
    with pytest.raises(amp.InvalidQueryError, match="never closed"):
        braze.parse_tag("{% connected_content " + " " * 4000 + "x")
    long = "{% connected_content https://profile-api.amplitude.com/v1/userprofile?get_cohort_ids=true" + \
        " " * 200_000 + ":save x" + " :retry" * 20_000 + " %}"
    assert braze.parse_tag(long).options == {"save": "x", "retry": True}
