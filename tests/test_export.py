"""Tests for amptools.export: Excel-safe CSV (property-based), safe files and the marketing table."""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import re
import stat
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
    """Whether a spreadsheet could run the cell, in any locale (";" splits cells in some)."""
    if PLAIN_NEGATIVE.match(cell):
        return False  # a number, not a formula (documented exception)
    for line in cell.splitlines() or [cell]:
        for segment in line.split(";"):
            if segment[:1] in ("\t", "\r"):
                return True
            rest = _SKIPPABLE.sub("", segment, count=1)
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
        ("FR;=cmd|' /C calc'!A0", "FR;'=cmd|' /C calc'!A0"),  # ";"-locale Excel splits here
        ("a;b", "a;b"),
        ("a; @x;'q", "a;' @x;''q"),
        ("-5;3", "'-5;3"),
        (";", ";"),
        ('a;"=1', 'a;\'"=1'),  # ";"-Excel would open a quoted field there
        ('"=1";x', '"=1";x'),  # a quote at the start of the cell is the file's own quoting
        ('a\n"=1', 'a\n\'"=1'),
    ],
)
def test_escape_examples(text: str, escaped: str) -> None:
    assert escape_cell(text) == escaped
    assert unescape_cell(escaped) == text


@settings(max_examples=400, deadline=None)
@given(st.text() | st.text(alphabet=st.sampled_from(";=+-@'\t\r\n \u00a0ab")))
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


# -- CSV in ";" locales (issue 9, item 16) ----------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.text(alphabet=st.sampled_from(';,="+-@\'\n\t ab')), min_size=2, max_size=2),
                min_size=1, max_size=6))
def test_read_with_semicolons_no_cell_starts_a_formula(rows: list[list[str]]) -> None:
    data = write(pd.DataFrame(rows, columns=["a;=b", "c"], dtype=object))
    text = data.decode("utf-8-sig")
    for row in csv.reader(io.StringIO(text, newline=""), delimiter=";"):
        for cell in row:
            assert not starts_formula(cell), (row, text)
    # The ","-reader still gets every value back exactly.
    assert [[unescape_cell(c) for c in row] for row in read_back(data)[1:]] == rows


def test_the_issue_example_is_split_harmlessly() -> None:
    data = write(pd.DataFrame({"country": ["FR;=cmd|' /C calc'!A0"]}))
    cells = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=";"))[1]
    assert cells == ["FR", "'=cmd|' /C calc'!A0"]


# -- files: odd bytes, atomic writes, private modes (issue 9, items 2 and 17) ---------------------
def test_lone_surrogates_are_written_as_replacement_characters(tmp_path: Path) -> None:
    body = json.loads('{"x": "a\\ud800b", "y": "\\udfff"}')  # valid JSON, not encodable text
    # object columns and header: pandas' Arrow-backed text (pyarrow installed) holds no lone surrogate
    df = pd.DataFrame([[body["x"], 1], ["ok", 2]], columns=pd.Index(["note", body["y"]], dtype=object), dtype=object)
    target = tmp_path / "out.csv"
    assert to_csv(df, target) == target
    rows = read_back(target.read_bytes())
    assert rows == [["note", "\ufffd"], ["a\ufffdb", "1"], ["ok", "2"]]
    assert read_back(write(df)) == rows  # binary streams too


def test_write_atomic_leaves_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "keep.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), export.write_atomic(target) as stream:
        stream.write("half a fi")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.csv"]  # no temporary file left
    with export.write_atomic(target) as stream:
        stream.write("new \ud800")
    assert target.read_bytes() == "new \ufffd".encode()


def test_to_csv_failing_at_the_end_leaves_no_half_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "marketing.csv"
    target.write_bytes(b"before")

    def no_space(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        to_csv(pd.DataFrame({"a": ["x" * 1000] * 100}), target)
    assert target.read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == ["marketing.csv"]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_exports_with_personal_data_are_private(tmp_path: Path, umask_022: None) -> None:
    with_pii = marketing_table(USERS, rec_id="home", props=["email"], include_pii=True)
    assert with_pii.attrs[export.PERSONAL_DATA_ATTR] is True
    assert with_pii.head(2).attrs[export.PERSONAL_DATA_ATTR] is True  # kept through slicing
    to_csv(with_pii, tmp_path / "pii.csv")
    assert mode_of(tmp_path / "pii.csv") == 0o600
    plain = marketing_table(USERS, rec_id="home")
    assert export.PERSONAL_DATA_ATTR not in plain.attrs
    to_csv(plain, tmp_path / "plain.csv")
    assert mode_of(tmp_path / "plain.csv") == 0o644
    to_csv(plain, tmp_path / "asked.csv", private=True)
    assert mode_of(tmp_path / "asked.csv") == 0o600
    # An existing file keeps its mode, whichever way.
    (tmp_path / "shared.csv").write_text("x")
    os.chmod(tmp_path / "shared.csv", 0o640)
    to_csv(with_pii, tmp_path / "shared.csv")
    assert mode_of(tmp_path / "shared.csv") == 0o640
    to_csv(plain, tmp_path / "pii.csv")
    assert mode_of(tmp_path / "pii.csv") == 0o600


# -- the marketing table's own columns (issue 9, item 1) --------------------------------------------
HOSTILE = [
    body("a", [rec("home", ["p", "q"])], {"is_control": "yes", "rec_1": "evil", "user_id": "mallory",
                                          "cohort:c1": False, "rec_7": "x", "prop:plan": "old",
                                          "plan": "pro"}, ["c1"]),
    body("b", [rec("home", ["x"], is_control=True)], {"recommendation_source": "me"}, []),
]


def test_a_property_never_overwrites_the_fixed_columns() -> None:
    clean = marketing_table(HOSTILE, top_n=2)
    with pytest.warns(export.PropertyRenamedWarning) as caught:
        frame = marketing_table(HOSTILE, top_n=2, props=True)
    assert len(caught) == 1
    message = str(caught[0].message)
    for name in ("is_control", "rec_1", "cohort:c1", "rec_7", "recommendation_source"):
        assert f"{name} -> prop:{name}" in message
    pd.testing.assert_frame_equal(frame[list(clean.columns)], clean)
    assert frame["prop:is_control"].tolist()[0] == "yes" and frame["prop:rec_1"].iloc[0] == "evil"
    # tables.properties() already keeps a "user_id" property apart.
    assert frame["property:user_id"].iloc[0] == "mallory" and frame["prop:rec_7"].iloc[0] == "x"
    assert frame["prop:recommendation_source"].iloc[1] == "me"
    assert frame["prop:plan"].iloc[0] == "old" and frame["plan"].iloc[0] == "pro"  # untouched
    assert frame.columns.is_unique
    with pytest.warns(export.PropertyRenamedWarning, match="is_control -> prop:is_control"):
        asked = marketing_table(HOSTILE, top_n=2, props=["is_control", "plan"])
    assert asked["is_control"].tolist() == [False, True] and asked["prop:is_control"].iloc[0] == "yes"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        marketing_table(HOSTILE, top_n=2, props=["plan"])  # no collision, no warning


def test_cohort_flags_are_in_natural_order() -> None:
    users = [body("a", None, None, ["cohort10", "cohort2", "b", "cohort1"])]
    frame = marketing_table(users, cohorts=True)
    assert [c for c in frame.columns if c.startswith("cohort:")] == [
        "cohort:b", "cohort:cohort1", "cohort:cohort2", "cohort:cohort10"]
    chosen = marketing_table(users, cohorts=["cohort10", "cohort2"])
    assert [c for c in chosen.columns if c.startswith("cohort:")] == ["cohort:cohort10", "cohort:cohort2"]


def test_items_as_a_list_column() -> None:
    users = USERS + [body("d", [rec("home", [])])]
    frame = marketing_table(users, rec_id="home", top_n=3, items_as="list", cohorts=False)
    assert list(frame.columns) == ["user_id", "device_id", "rec_id", "is_control", "recommendation_source",
                                   "rec_items"]
    assert frame["rec_items"].iloc[0] == ["p", "q", "r"] and frame["rec_items"].iloc[1] == ["x", "y"]
    assert pd.isna(frame["rec_items"].iloc[2]) and frame["rec_items"].iloc[3] == []
    with pytest.raises(ValueError, match="items_as"):
        marketing_table(users, rec_id="home", items_as="rows")
