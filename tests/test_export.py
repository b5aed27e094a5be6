"""Tests for amptools.export: Excel-safe CSV (property-based) and the marketing table."""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amptools import export, tables
from amptools.export import PersonalDataError, escape_cell, marketing_table, to_csv, unescape_cell
from amptools.models import UserProfile

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"

# A line "starts a formula" when, after white space / control / invisible characters,
# its first character is a trigger, or when it starts with tab or CR.
_SKIPPABLE = re.compile(
    r"^[\s\x00-\x20\x7f-\xa0\u00ad\u061c\u0600-\u0605\u1680\u180e\u2000-\u200f"
    r"\u2028-\u202f\u205f-\u206f\u3000\ufeff\ufff9-\ufffb\U000e0000-\U000e007f]*"
)
TRIGGERS = set("=+-@\uff1d\uff0b\uff0d\uff20")
PLAIN_NEGATIVE = re.compile(r"^-(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def starts_formula(cell: str) -> bool:
    if PLAIN_NEGATIVE.match(cell):
        return False  # a number, not a formula (documented exception)
    for line in cell.splitlines() or [cell]:
        if line[:1] in ("\t", "\r"):
            return True
        rest = _SKIPPABLE.sub("", line, count=1)
        if rest[:1] in TRIGGERS:
            return True
    return False


def read_back(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def write(df: pd.DataFrame, **options: Any) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", export.ExcelReformatWarning)
        assert to_csv(df, buffer, **options) is buffer
    return buffer.getvalue()


# -- the escaping rule --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, escaped",
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1+1", "'-1+1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "\r'=1"),  # CR is a line break: the second line is escaped
        ("  =1", "'  =1"),
        ("\u00a0=1", "'\u00a0=1"),
        ("\u200b@x", "'\u200b@x"),
        ("\uff1dcmd", "'\uff1dcmd"),
        ("ok\n=HYPERLINK(\"x\")", "ok\n'=HYPERLINK(\"x\")"),
        ("a\r\n-2+3\r\nb", "a\r\n'-2+3\r\nb"),
        ("'quoted", "''quoted"),
        ("-5", "-5"),
        ("-1.25", "-1.25"),
        ("-3e4", "-3e4"),
        (" -5", "' -5"),
        ("hello world", "hello world"),
        ("a-b=c", "a-b=c"),
        ("", ""),
    ],
)
def test_escape_examples(text: str, escaped: str) -> None:
    assert escape_cell(text) == escaped
    assert unescape_cell(escaped) == text


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_escape_is_safe_and_reversible(text: str) -> None:
    escaped = escape_cell(text)
    assert not starts_formula(escaped)
    assert unescape_cell(escaped) == text


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(), st.text(alphabet=st.sampled_from("=+-@\t\r\n '\u00a0ab1")), st.text()),
        min_size=1,
        max_size=8,
    ),
    st.text(min_size=1),
)
def test_to_csv_round_trip_arbitrary_unicode(rows: list[tuple[str, str, str]], header: str) -> None:
    df = pd.DataFrame(rows, columns=[header, "b", "c"], dtype=object)
    original = copy.deepcopy(df)
    read = read_back(write(df))
    pd.testing.assert_frame_equal(df, original)  # never changes its input
    assert read[0][0] == escape_cell(header)
    assert len(read) == len(rows) + 1
    for written, expected in zip(read[1:], rows):
        for cell, value in zip(written, expected):
            assert not starts_formula(cell)
            assert unescape_cell(cell) == value


def test_excel_safe_false_writes_raw_text() -> None:
    df = pd.DataFrame({"a": ["=1+1", "'x"]})
    assert read_back(write(df, excel_safe=False))[1:] == [["=1+1"], ["'x"]]


def test_bom_crlf_quoting_and_types() -> None:
    df = pd.DataFrame({
        "text": ["a,b", 'say "hi"', "two\nlines"],
        "n": [-5, 0, 12],
        "f": [-1.5, None, 2.0],
        "flag": pd.array([True, None, False], dtype="boolean"),
        "when": pd.to_datetime([1608670720, None, 0], unit="s", utc=True),
        "id": ["00123", "12345678901234567890", "x"],
    })
    data = write(df)
    assert data.startswith(b"\xef\xbb\xbf")
    assert data.count(b"\r\n") == 4 and b"\n" not in data.replace(b"\r\n", b"").replace(b"two\nlines", b"")
    assert b'"a,b"' in data and b'"say ""hi"""' in data and b'"two\nlines"' in data
    rows = read_back(data)
    assert rows[0] == ["text", "n", "f", "flag", "when", "id"]
    assert rows[1] == ["a,b", "-5", "-1.5", "TRUE", "2020-12-22 20:58:40", "00123"]
    assert rows[2] == ['say "hi"', "0", "", "", "", "12345678901234567890"]
    assert rows[3][3] == "FALSE"


def test_no_bom_and_paths_and_text_streams(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": ["=x"]})
    target = tmp_path / "out.csv"
    assert to_csv(df, target, bom=False) == target
    assert target.read_bytes() == b"a\r\n'=x\r\n"
    assert to_csv(df, str(target)) == str(target)
    assert target.read_bytes().startswith(b"\xef\xbb\xbf")
    text = io.StringIO(newline="")
    to_csv(df, text)
    assert text.getvalue() == "\ufeffa\r\n'=x\r\n"


def test_headers_are_escaped() -> None:
    rows = read_back(write(pd.DataFrame({"=cmd|' /C calc'!A0": [1]})))
    assert rows[0] == ["'=cmd|' /C calc'!A0"]


def test_leading_zero_ids_warn_but_stay_exact() -> None:
    df = pd.DataFrame({"user_id": pd.array(["00123", "7"], dtype="str")})
    buffer = io.BytesIO()
    with pytest.warns(export.ExcelReformatWarning, match="user_id"):
        to_csv(df, buffer)
    assert read_back(buffer.getvalue())[1:] == [["00123"], ["7"]]


def test_tables_export_end_to_end() -> None:
    bodies = [json.loads((SAMPLES / f"{n}.json").read_text()) for n in ("two_recs", "user_properties")]
    rows = read_back(write(tables.recommendations(bodies)))
    assert rows[0] == list(tables.RECOMMENDATION_COLUMNS)
    assert rows[1] == ["testUser", "ffff-ffff-ffff-ffff", "testRecId", "testRecId", "model", "FALSE",
                       "2020-12-22 20:58:40", "1", "cookie"]


# -- marketing table ---------------------------------------------------------------------------------
def body(user_id: str, recs: list[dict[str, Any]] | None = None, props: dict[str, Any] | None = None,
         cohorts: list[str] | None = None) -> dict[str, Any]:
    return {"userData": {"user_id": user_id, "device_id": f"d-{user_id}", "recommendations": recs,
                         "amp_props": props, "cohort_ids": cohorts}}


def rec(rec_id: str, items: list[str], is_control: bool = False) -> dict[str, Any]:
    return {"rec_id": rec_id, "child_rec_id": rec_id, "items": items, "is_control": is_control,
            "recommendation_source": f"model-{rec_id}", "last_updated": 1608670720}


USERS = [
    body("a", [rec("home", list("pqrstuv")), rec("email", ["e1"])],
         {"plan": "pro", "gp:email": "a@example.com", "gp:favorite_category": "toys",
          "email_opt_in": True, "notes": "write to me: me@example.org"}, ["c1"]),
    body("b", [rec("home", ["x", "y"], is_control=True)], {"plan": "free", "gp:email": "b@example.com"}, []),
    body("c", None, None, None),
]


def test_marketing_requires_a_choice_between_sets() -> None:
    with pytest.raises(ValueError, match="home.*email|email.*home"):
        marketing_table(USERS)
    with pytest.raises(ValueError, match="available: email, home"):
        marketing_table(USERS, rec_id="nope")


def test_marketing_columns_and_values() -> None:
    before = copy.deepcopy(USERS)
    frame = marketing_table(USERS, rec_id="home", top_n=3, props=["plan", "favorite_category"])
    assert USERS == before
    assert list(frame.columns) == [
        "user_id", "device_id", "rec_id", "is_control", "recommendation_source",
        "rec_1", "rec_2", "rec_3", "cohort:c1", "plan", "favorite_category",
    ]
    assert frame["rec_1"].tolist()[:2] == ["p", "x"]
    assert frame["rec_3"].iloc[0] == "r" and pd.isna(frame["rec_3"].iloc[1])
    assert frame.loc[2, ["rec_id", "rec_1", "rec_2", "rec_3"]].isna().all()
    assert frame["is_control"].tolist()[:2] == [False, True] and pd.isna(frame["is_control"].iloc[2])
    assert frame["recommendation_source"].iloc[0] == "model-home"
    assert frame["cohort:c1"].tolist()[:2] == [True, False] and pd.isna(frame["cohort:c1"].iloc[2])
    assert frame["favorite_category"].iloc[0] == "toys"


def test_marketing_only_set_is_picked() -> None:
    frame = marketing_table([USERS[1], USERS[2]], cohorts=False)
    assert frame["rec_id"].iloc[0] == "home"
    assert not any(c.startswith("cohort:") for c in frame.columns)


@pytest.mark.parametrize("name", ["email", "gp:email", "EMAIL", "notes"])
def test_marketing_refuses_personal_data_by_name_or_value(name: str) -> None:
    with pytest.raises(PersonalDataError, match="include_pii=True"):
        marketing_table(USERS, rec_id="home", props=[name])


def test_marketing_all_props_leaves_personal_data_out() -> None:
    frame = marketing_table(USERS, rec_id="home", props=True)
    assert "gp:email" not in frame.columns and "notes" not in frame.columns
    assert {"plan", "gp:favorite_category", "email_opt_in"} <= set(frame.columns)
    with_pii = marketing_table(USERS, rec_id="home", props=True, include_pii=True)
    assert {"gp:email", "notes"} <= set(with_pii.columns)
    explicit = marketing_table(USERS, rec_id="home", props=["email"], include_pii=True)
    assert explicit["email"].iloc[0] == "a@example.com"


def test_marketing_unknown_prop_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no profile has the property 'plann'"):
        marketing_table(USERS, rec_id="home", props=["plann"])


@pytest.mark.parametrize(
    "name, pii",
    [("email", True), ("gp:Email", True), ("email_address", True), ("phoneNumber", True),
     ("gp:phone", True), ("first_name", True), ("gp:last_name", True), ("name", True),
     ("ip", True), ("last_ip", True), ("street", True), ("zip", True), ("home_address", True),
     ("birthday", True), ("plan_name", False), ("email_opt_in", False), ("plan", False),
     ("gp:favorite_category", False), ("shipping", False), ("zipper_color", False)],
)
def test_personal_data_names(name: str, pii: bool) -> None:
    assert export.is_personal_data_name(name) is pii


def test_marketing_accepts_profiles_and_exports() -> None:
    profiles = [UserProfile.from_json(b) for b in USERS]
    frame = marketing_table(profiles, rec_id="email", top_n=2)
    assert frame["rec_1"].tolist()[0] == "e1" and pd.isna(frame["rec_2"].iloc[0])
    rows = read_back(write(frame))
    assert rows[1][:6] == ["a", "d-a", "email", "FALSE", "model-email", "e1"]
    with pytest.raises(ValueError, match="top_n"):
        marketing_table(profiles, rec_id="email", top_n=0)
