"""Tests for the Braze import files: to_braze_csv (read back under Braze's rules) and to_braze_json."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import stat
import warnings
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from amptools import BrazeImportError, export
from amptools.export import marketing_table, to_braze_csv, to_braze_json

MISSING = object()  # an empty, unquoted cell: Braze leaves the user's value alone


# -- a reader that sees the file as Braze does ------------------------------------------------------
def tokenize(text: str) -> list[list[tuple[str, bool]]]:
    """RFC 4180 with "\\n" line ends: rows of (cell text, was it quoted)."""
    rows: list[list[tuple[str, bool]]] = []
    row: list[tuple[str, bool]] = []
    cell: list[str] = []
    quoted = in_quotes = False
    i = 0
    while i < len(text):
        char = text[i]
        if in_quotes:
            if char == '"' and text[i + 1:i + 2] == '"':
                cell.append('"')
                i += 1
            elif char == '"':
                in_quotes = False
                assert text[i + 1:i + 2] in (",", "\n", ""), f"text after a closing quote at {i}"
            else:
                cell.append(char)
        elif char == '"':
            assert not cell, f"a quote inside an unquoted cell at {i}"
            in_quotes = quoted = True
        elif char in ",\n":
            row.append(("".join(cell), quoted))
            cell, quoted = [], False
            if char == "\n":
                rows.append(row)
                row = []
        else:
            assert char != "\r", "only \\n line ends"
            cell.append(char)
        i += 1
    assert not in_quotes and not cell and not row, "the file must end with a line end"
    return rows


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2}))?$")
_NUMBER = re.compile(r"^-?(?:\d+(?:\.\d+)?|\.\d+)$")


def infer(text: str, quoted: bool) -> Any:
    """The value Braze reads from one cell."""
    if quoted:
        return text
    if text == "":
        return MISSING
    if text in ("true", "false"):
        return text == "true"
    if _ISO.match(text):
        if "T" not in text:
            return date.fromisoformat(text)
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    if _NUMBER.match(text):
        return int(text) if re.fullmatch(r"-?\d+", text) else float(text)
    return text


def read_braze(data: bytes) -> tuple[list[str], list[list[Any]]]:
    """Header and typed rows of a Braze CSV, checking the file's shape on the way."""
    assert not data.startswith(b"\xef\xbb\xbf"), "no byte-order mark"
    text = data.decode("utf-8")  # strict: the file is valid UTF-8
    rows = tokenize(text)
    # Python's csv module agrees on every cell's text.
    assert [[c for c, _ in row] for row in rows] == list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0]
    assert all(not quoted for _, quoted in header)
    width = len(header)
    for row in rows[1:]:
        assert len(row) == width, "every row has as many cells as the header"
        assert any(c != "" or q for c, q in row), "no blank rows"
    return [c for c, _ in header], [[infer(c, q) for c, q in row] for row in rows[1:]]


# -- the corpus ---------------------------------------------------------------------------------------
EXCEL_CORPUS = ["=1+1", "+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1", "  =1", "\u00a0=1", "\u200b@x",
                "\uff1dcmd", 'ok\n=HYPERLINK("x")', "'quoted", "-5", "FR;=cmd|' /C calc'!A0"]
AWKWARD = ["00123", "+441234567890", "12345678901234567890", "cookie 🍪", "\u00a0nbsp", "nbsp\u00a0",
           " padded ", "two\nlines", "cr\r\nlf", "a,b", 'say "hi"', "", "true", "FALSE", "nan", "inf",
           "1e5", ".5", "2024-01-01", "2024-01-01T00:00:00Z", "plain text", "null"]
TEXTS: list[str | None] = EXCEL_CORPUS + AWKWARD + [None]


def corpus_frame() -> pd.DataFrame:
    n = len(TEXTS)
    ids = ["00123", "+441234567890", "12345678901234567890", "émile 🍪", "a,b", 'q"uote', "1.5", "true"]
    ids += [f"user-{i}" for i in range(n - len(ids))]
    aware = pd.Series(pd.to_datetime(["2020-12-22T20:58:40.123456Z", None] + ["1970-01-01T00:00:00.000001Z"] * (n - 2),
                                     utc=True))
    big: list[Any] = [10**30, -(2**63), 2**64, None, 10**400] + list(range(n - 5))
    return pd.DataFrame({
        "user_id": ids,
        "text": pd.Series(TEXTS, dtype=object),
        "big": pd.Series(big, dtype=object),
        "score": [0.1, float("nan"), -2.5, 1e20, 1.5e-7, 3.0] + [1.0] * (n - 6),
        "count": np.arange(n, dtype=np.int64) - 3,
        "flag": pd.array([True, None, False] + [True] * (n - 3), dtype="boolean"),
        "when": aware.dt.tz_convert("Europe/Berlin"),
        "naive": [datetime(2024, 2, 29, 23, 59, 59), None] + [datetime(2000, 1, 1)] * (n - 2),
        "dob": [date(1980, 12, 21), None] + [date(2000, 1, 2)] * (n - 2),
        "str_dtype": pd.array([t if t is None else f"{t}" for t in TEXTS], dtype="string"),
    })


def expected(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return MISSING
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC").to_pydatetime() if value.tzinfo else value.tz_localize("UTC").to_pydatetime()
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc)
    if isinstance(value, (np.integer, np.bool_, np.floating)):
        return value.item()
    return value


def test_the_corpus_reads_back_as_braze_would_infer_it(tmp_path: Path) -> None:
    from amptools.braze.files import clean_csv_text as clean

    frame = corpus_frame()
    frame.loc[5, "user_id"] = "q'uote"  # an id is never cleaned: one with a " is refused (below)
    before = frame.copy(deep=True)
    written = to_braze_csv(frame, tmp_path / "braze.csv", clean_text=True)
    assert written == [tmp_path / "braze.csv"]
    pd.testing.assert_frame_equal(frame, before)  # never changes its input
    header, rows = read_braze(written[0].read_bytes())
    assert header == ["external_id"] + list(frame.columns[1:])  # the ids first, under Braze's name
    assert len(rows) == len(frame)
    for r, row in enumerate(rows):
        assert row[0] == frame["user_id"].iloc[r]
        for name, cell in zip(header[1:], row[1:]):
            want = expected(frame[name].iloc[r])
            if isinstance(want, str):
                want = clean(want)
            if isinstance(want, float):
                assert type(cell) in (int, float) and cell == want, (name, r)
            else:
                assert cell == want and type(cell) is type(want), (name, r, cell, want)
    # Text only gains quotes where Braze needs them, never an apostrophe.
    data = written[0].read_text(encoding="utf-8")
    assert "plain text" in data and '"plain text"' not in data
    assert '"00123"' in data and '"+441234567890"' in data and '"true"' in data and ',"",' in data
    assert "'=1+1" not in data and "=1+1" in data
    assert "2020-12-22T20:58:40.123456Z" in data and "2024-02-29T23:59:59Z" in data
    assert ",100000000000000000000," in data and ",0.00000015," in data and "e+" not in data


def test_lone_surrogates_become_replacement_characters(tmp_path: Path) -> None:
    # object columns: pandas' Arrow-backed text (pyarrow installed) cannot hold a lone surrogate
    frame = pd.DataFrame({"user_id": ["a"], "note": [json.loads('"x\\ud800y"')]}, dtype=object)
    path = to_braze_csv(frame, tmp_path / "b.csv")[0]
    assert read_braze(path.read_bytes())[1] == [["a", "x\ufffdy"]]
    jsonl = to_braze_json(frame, tmp_path / "b.jsonl")
    assert json.loads(jsonl.read_text(encoding="utf-8"))["attributes"][0]["note"] == "x\ufffdy"


def test_other_id_schemes(tmp_path: Path) -> None:
    frame = pd.DataFrame({"device_id": ["d-1", "00777"], "plan": ["pro", "free"]})
    path = to_braze_csv(frame, tmp_path / "a.csv", external_id="device_id", id_type="user_alias",
                        alias_label="amplitude_device_id")[0]
    header, rows = read_braze(path.read_bytes())
    assert header == ["user_alias_name", "user_alias_label", "plan"]
    assert rows == [["d-1", "amplitude_device_id", "pro"], ["00777", "amplitude_device_id", "free"]]
    path = to_braze_csv(frame, tmp_path / "b.csv", external_id="device_id", id_type="braze_id")[0]
    assert read_braze(path.read_bytes())[0] == ["braze_id", "plan"]
    body = json.loads(to_braze_json(frame, tmp_path / "a.jsonl", external_id="device_id", id_type="user_alias",
                                    alias_label="amplitude_device_id").read_text())
    assert body["attributes"][1] == {"user_alias": {"alias_name": "00777", "alias_label": "amplitude_device_id"},
                                     "plan": "free"}
    with pytest.raises(ValueError, match="alias_label"):
        to_braze_csv(frame, tmp_path / "c.csv", external_id="device_id", id_type="user_alias")
    with pytest.raises(ValueError, match="id_type"):
        to_braze_csv(frame, tmp_path / "c.csv", external_id="device_id", id_type="email")


# -- validation: every problem, alone and all together ----------------------------------------------------
def base(**columns: Any) -> pd.DataFrame:
    frame = pd.DataFrame({"user_id": ["a", "b", "c"], "plan": ["pro", "free", "pro"]})
    for name, values in columns.items():
        frame[name] = pd.Series(values, dtype=object)
    return frame


CASES = {
    "missing ids": (lambda f: f.assign(user_id=["a", None, "c"]), "1 row(s) have no id in 'user_id' (rows 2)"),
    "empty ids": (lambda f: f.assign(user_id=["a", "", " "]), "2 row(s) have no id in 'user_id' (rows 2, 3)"),
    "duplicate ids": (lambda f: f.assign(user_id=["a", "b", "a"]), "'a' (2x)"),
    "ids not text": (lambda f: f.assign(user_id=pd.Series(["a", 1.5, "c"], dtype=object)),
                     "ids in 'user_id' must be text: row 2: 1.5"),
    "mixed types": (lambda f: base(age=[30, "thirty", None]), "column 'age' mixes types: number"),
    "reserved": (lambda f: base(braze_id=["x", "y", "z"], _update_existing_only=[True, True, True]),
                 "'braze_id', '_update_existing_only' use names Braze reserves"),
    "case of a default": (lambda f: base(Email=["x", "y", "z"]), "'Email' (Braze's is 'email')"),
    "lists": (lambda f: base(rec_items=[["p"], [], None]), "column 'rec_items' holds lists"),
    "dicts": (lambda f: base(address=[{"city": "x"}, None, None]),
              "column 'address' holds objects"),
    "infinite": (lambda f: base(score=[1.0, float("inf"), 2.0]), "column 'score' holds infinite numbers (rows 2)"),
    "default formats": (lambda f: base(country=["GB", "Germany", None]),
                        "takes ISO 3166-1 alpha-2 codes such as 'GB'; row 2: 'Germany' would be misread"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_problem_alone(case: str, tmp_path: Path) -> None:
    build, message = CASES[case]
    frame = build(base())
    with pytest.raises(BrazeImportError) as caught:
        to_braze_csv(frame, tmp_path / "b.csv")
    assert message in str(caught.value)
    assert len(caught.value.problems) == 1, caught.value.problems
    assert not list(tmp_path.iterdir())  # nothing written
    if case not in ("lists", "dicts"):
        with pytest.raises(BrazeImportError, match=re.escape(message)):
            to_braze_json(frame, tmp_path / "b.jsonl")
    else:
        to_braze_json(frame, tmp_path / "b.jsonl")  # the JSON batches keep lists and objects


def test_every_problem_together_in_one_error(tmp_path: Path) -> None:
    frame = pd.DataFrame({
        "user_id": pd.Series(["a", "a", None, "", 2.5], dtype=object),
        "age": pd.Series([30, "thirty", None, None, None], dtype=object),
        "braze_id": ["x"] * 5,
        "First_Name": ["x"] * 5,
        "rec_items": pd.Series([["p"], None, None, None, None], dtype=object),
        "address": pd.Series([{"city": "x"}, None, None, None, None], dtype=object),
        "score": [1.0, math.inf, 2.0, 3.0, 4.0],
        "dob": ["1980-12-21", "21.12.1980", None, None, None],
    })
    with pytest.raises(BrazeImportError) as caught:
        to_braze_csv(frame, tmp_path / "b.csv")
    problems = caught.value.problems
    assert len(problems) == 10
    text = str(caught.value)
    assert "10 problems" in text and "nothing was written" in text
    for fragment in ("no id in 'user_id' (rows 3, 4)", "'a' (2x)", "must be text", "'age' mixes types",
                     "'braze_id'", "'First_Name' (Braze's is 'first_name')", "'rec_items' holds lists",
                     "'address' holds objects", "'score' holds infinite", "row 2: '21.12.1980'"):
        assert sum(fragment in p for p in problems) == 1, fragment
    assert isinstance(caught.value, ValueError) and not list(tmp_path.iterdir())


def test_no_id_column_and_repeated_names(tmp_path: Path) -> None:
    frame = pd.DataFrame([["a", 1, 2]], columns=["uid", "n", "n"])
    with pytest.raises(BrazeImportError) as caught:
        to_braze_csv(frame, tmp_path / "b.csv")
    assert len(caught.value.problems) == 2
    assert "no column 'user_id' to take the ids from" in str(caught.value)
    assert "'n' appear more than once" in str(caught.value)
    assert to_braze_csv(frame.iloc[:, :2], tmp_path / "b.csv", external_id="uid")  # named: fine


# -- splitting ----------------------------------------------------------------------------------------------
def test_large_files_split_into_whole_parts_each_with_the_header(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": [f"u{i:04d}" for i in range(300)],
                          "note": [("line\nbreak, " if i % 7 == 0 else "x") * (i % 5) for i in range(300)],
                          "n": range(300)})
    whole = to_braze_csv(frame, tmp_path / "whole.csv", clean_text=True)[0].read_bytes()
    header = whole.split(b"\n", 1)[0] + b"\n"
    parts = to_braze_csv(frame, tmp_path / "part.csv", max_bytes=600, clean_text=True)
    assert len(parts) > 5
    assert [p.name for p in parts] == [f"part-{i}-of-{len(parts)}.csv" for i in range(1, len(parts) + 1)]
    assert not (tmp_path / "part.csv").exists()
    bodies = []
    for part in parts:
        data = part.read_bytes()
        assert len(data) <= 600 and data.startswith(header)
        read_braze(data)  # each part is a whole file: every row complete
        bodies.append(data[len(header):])
    assert header + b"".join(bodies) == whole
    with pytest.raises(BrazeImportError, match="max_bytes=40 is too small"):
        to_braze_csv(frame, tmp_path / "tiny.csv", max_bytes=40, clean_text=True)
    with pytest.raises(ValueError, match="max_bytes"):
        to_braze_csv(frame, tmp_path / "tiny.csv", max_bytes=0)


def fail_fsync(monkeypatch: pytest.MonkeyPatch, *, call: int) -> None:
    """Make the ``call``-th fsync fail as a full disk does."""
    calls = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == call:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_failed_part_leaves_no_part_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(100)]})
    fail_fsync(monkeypatch, call=3)
    with pytest.raises(OSError):
        to_braze_csv(frame, tmp_path / "b.csv", max_bytes=200)
    assert list(tmp_path.iterdir()) == []


# -- the marketing table, both ways ---------------------------------------------------------------------------
def user(uid: str, items: list[str] | None, cohorts: list[str], plan: str | None = None) -> dict[str, Any]:
    recs = None if items is None else [{"rec_id": "home", "child_rec_id": "home", "items": items,
                                        "is_control": uid.endswith("7"), "recommendation_source": "m",
                                        "last_updated": 1608670720}]
    return {"userData": {"user_id": uid, "device_id": f"d-{uid}", "recommendations": recs,
                         "amp_props": {"plan": plan} if plan else {}, "cohort_ids": cohorts}}


USERS = [user(f"{i:05d}", None if i % 50 == 3 else ["cookie", "cracker", f"item-{i}"][: i % 4],
              [f"cohort{i % 12}"], "pro" if i % 2 else None) for i in range(160)]


def test_marketing_table_to_braze_csv_keeps_rec_columns(tmp_path: Path) -> None:
    table = marketing_table(USERS, top_n=3, props=["plan"])
    header, rows = read_braze(to_braze_csv(table, tmp_path / "b.csv")[0].read_bytes())
    assert header[:8] == ["external_id", "device_id", "rec_id", "is_control", "recommendation_source",
                          "rec_1", "rec_2", "rec_3"]
    assert header[8:12] == ["cohort:cohort0", "cohort:cohort1", "cohort:cohort2", "cohort:cohort3"]
    assert header[-2:] == ["cohort:cohort11", "plan"]
    assert [r[0] for r in rows] == [f"{i:05d}" for i in range(160)]  # ids exact, zeros kept
    assert rows[2][3:8] == [False, "m", "cookie", "cracker", MISSING]
    assert rows[3][2:8] == [MISSING] * 6 and rows[7][3] is True
    with pytest.raises(BrazeImportError, match="'rec_items' holds lists.*to_braze_json"):
        to_braze_csv(marketing_table(USERS, top_n=3, items_as="list"), tmp_path / "c.csv")


def test_json_batches(tmp_path: Path) -> None:
    table = marketing_table(USERS, top_n=3, props=["plan"], items_as="list")
    path = to_braze_json(table, tmp_path / "track.jsonl")
    assert path == tmp_path / "track.jsonl"
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 3  # 160 users: 75 + 75 + 10
    bodies = [json.loads(line) for line in lines[:-1]]
    assert all(set(b) == {"attributes"} and len(b["attributes"]) <= 75 for b in bodies)
    objects = [o for b in bodies for o in b["attributes"]]
    assert [o["external_id"] for o in objects] == [f"{i:05d}" for i in range(160)]
    assert objects[2]["rec_items"] == ["cookie", "cracker"] and objects[0]["rec_items"] == []
    assert "rec_items" not in objects[3] and "rec_id" not in objects[3]  # missing: left alone, never null
    assert objects[7]["is_control"] is True and objects[1]["cohort:cohort1"] is True
    assert objects[1]["plan"] == "pro" and "plan" not in objects[0]
    assert list(objects[0])[:2] == ["external_id", "device_id"]
    assert all(v is not None for o in objects for v in o.values())
    small = to_braze_json(table, tmp_path / "small.jsonl", batch=10).read_text().splitlines()
    assert [len(json.loads(line)["attributes"]) for line in small] == [10] * 16
    for bad in (0, 76, 2.5, True):
        with pytest.raises(ValueError, match="batch"):
            to_braze_json(table, tmp_path / "x.jsonl", batch=bad)


def test_json_keeps_types(tmp_path: Path) -> None:
    frame = corpus_frame()
    objects = [o for line in to_braze_json(frame, tmp_path / "c.jsonl").read_text().splitlines()
               for o in json.loads(line)["attributes"]]
    first = objects[0]
    assert first["external_id"] == "00123" and first["big"] == 10**30 and first["score"] == 0.1
    assert first["count"] == -3 and first["flag"] is True and first["text"] == "=1+1"
    assert first["when"] == "2020-12-22T20:58:40.123456Z" and first["naive"] == "2024-02-29T23:59:59Z"
    assert first["dob"] == "1980-12-21"
    assert [o.get("text", MISSING) for o in objects] == [MISSING if t is None else t for t in TEXTS]
    assert "score" not in objects[1] and "flag" not in objects[1] and "when" not in objects[1]


def test_braze_files_with_personal_data_are_private(tmp_path: Path, umask_022: None) -> None:
    users = [{"userData": {"user_id": "a", "device_id": "d", "amp_props": {"email": "a@example.com"}}}]
    with_pii = marketing_table(users, props=["email"], include_pii=True, cohorts=False)
    csv_path = to_braze_csv(with_pii, tmp_path / "pii.csv")[0]
    json_path = to_braze_json(with_pii, tmp_path / "pii.jsonl")
    assert stat.S_IMODE(csv_path.stat().st_mode) == 0o600 == stat.S_IMODE(json_path.stat().st_mode)
    assert read_braze(csv_path.read_bytes())[0][-1] == "email"  # a default attribute, exact name
    plain = to_braze_csv(marketing_table(users, cohorts=False), tmp_path / "plain.csv")[0]
    assert stat.S_IMODE(plain.stat().st_mode) == 0o644


# -- Braze's CSV rules on text (issue 19, item 5; issue 18, item 12) --------------------------------------
def test_a_double_quote_or_a_line_break_is_refused_listing_the_cells(tmp_path: Path) -> None:
    # Braze's user import troubleshooting: a double quotation mark "isn't valid and will make
    # the row malformed. Instead, use single quotation marks".
    frame = base(note=['say "hi"', "two\nlines", "fine"], raw=["nul\x00", "esc\x1b[2J", None])
    with pytest.raises(BrazeImportError) as caught:
        to_braze_csv(frame, tmp_path / "b.csv")
    text = str(caught.value)
    assert len(caught.value.problems) == 2 and not list(tmp_path.iterdir())
    assert "column 'note' holds a double quotation mark" in text
    assert "row 1: 'say \"hi\"'" in text and "row 2: 'two\\nlines'" in text
    assert "row 1: 'nul\\x00'" in text and "row 2: 'esc\\x1b[2J'" in text and "clean_text=True" in text
    path = to_braze_csv(frame, tmp_path / "b.csv", clean_text=True)[0]
    data = path.read_bytes()
    assert b'"' not in data.replace(b'""', b"")  # no quote inside a value, only RFC 4180's own
    assert b"\x00" not in data and b"\x1b" not in data
    _, rows = read_braze(data)
    assert [r[1:] for r in rows] == [["pro", "say 'hi'", "nul"], ["free", "two lines", "esc[2J"],
                                     ["pro", "fine", MISSING]]
    # JSON escapes all of it: /users/track takes the text as it is.
    objects = json.loads(to_braze_json(frame, tmp_path / "b.jsonl").read_text())["attributes"]
    assert objects[0]["note"] == 'say "hi"' and objects[0]["raw"] == "nul\x00"


def test_ids_and_names_are_never_cleaned(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": ['a"b', "c"], 'odd"name': [1, 2]})
    with pytest.raises(BrazeImportError) as caught:
        to_braze_csv(frame, tmp_path / "b.csv", clean_text=True)
    assert len(caught.value.problems) == 2
    assert "row 1: 'a\"b'" in str(caught.value) and "'odd\"name'" in str(caught.value)


def test_bytes_are_refused_not_written_as_their_repr(tmp_path: Path) -> None:
    frame = base(blob=[b"\xff\xfe", None, b"abc"])
    for write in (lambda: to_braze_csv(frame, tmp_path / "b.csv"), lambda: to_braze_json(frame, tmp_path / "b.jsonl")):
        with pytest.raises(BrazeImportError, match=r"column 'blob' holds bytes \(rows 1, 3\)"):
            write()
    assert not list(tmp_path.iterdir())


def test_infinite_numbers_inside_lists_are_a_braze_import_error(tmp_path: Path) -> None:
    frame = base(scores=[[1.0, float("inf")], [2.0], None], meta=[{"x": {"y": -math.inf}}, None, {"b": b"x"}])
    with pytest.raises(BrazeImportError) as caught:
        to_braze_json(frame, tmp_path / "b.jsonl")
    problems = caught.value.problems
    assert "column 'scores' holds infinite numbers inside its lists or objects (rows 1)" in problems[0]
    assert any("column 'meta' holds infinite numbers" in p and "(rows 1)" in p for p in problems)
    assert any("column 'meta' holds bytes inside" in p and "(rows 3)" in p for p in problems)
    assert not list(tmp_path.iterdir())


# -- Braze's default attributes (issue 19, item 8) ---------------------------------------------------------
def test_gender_takes_brazes_letters(tmp_path: Path) -> None:
    # Braze's user import, "Default user data column headers": "M", "F", "O" (other),
    # "N" (not applicable), "P" (prefer not to say), or nil (unknown).
    with pytest.raises(BrazeImportError, match=r"gender.*row 2: 'female'"):
        to_braze_csv(base(gender=["M", "female", None]), tmp_path / "b.csv")
    assert to_braze_csv(base(gender=["M", "P", "U"]), tmp_path / "b.csv")


def test_phone_and_time_zone_formats_are_advised(tmp_path: Path) -> None:
    # Braze's user import: phone "in E.164 format (for example, +442071838750)"; time_zone
    # "in the same format as the IANA Time Zone Database (for example, America/New_York)".
    frame = base(phone=["+442071838750", "020 7183 8750", None], time_zone=["America/New_York", "CET+1", None])
    with pytest.warns(export.BrazeFormatWarning) as caught:
        path = to_braze_csv(frame, tmp_path / "b.csv")[0]
    messages = [str(w.message) for w in caught]
    assert any("E.164" in m and "'020 7183 8750'" in m for m in messages)
    assert any("IANA" in m and "'CET+1'" in m for m in messages)
    assert read_braze(path.read_bytes())[1][1][2] == "020 7183 8750"  # imported all the same
    with warnings.catch_warnings():
        warnings.simplefilter("error", export.BrazeFormatWarning)
        to_braze_csv(base(phone=["+15551234567"] * 3, time_zone=["Europe/Berlin"] * 3), tmp_path / "c.csv")


@pytest.mark.parametrize("name", ["push_tokens", "current_location", "facebook", "twitter"])
def test_default_attributes_the_csv_import_does_not_take(name: str, tmp_path: Path) -> None:
    # Braze's user import: push tokens and arrays cannot be imported by CSV.
    with pytest.raises(BrazeImportError, match=f"'{name}' are Braze default attributes its CSV import does not take"):
        to_braze_csv(base(**{name: ["x", "y", "z"]}), tmp_path / "b.csv")
    assert name in export.BRAZE_DEFAULT_ATTRIBUTES and name not in export.BRAZE_CSV_ATTRIBUTES
    to_braze_json(base(**{name: ["x", "y", "z"]}), tmp_path / "b.jsonl")


# -- parts: stale ones removed, an earlier export never lost (issue 18, item 12) ----------------------------
def _users(n: int) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [f"u{i:03d}" for i in range(n)]})


def test_a_smaller_export_removes_the_stale_parts_of_the_last(tmp_path: Path) -> None:
    (tmp_path / "other-1-of-2.csv").write_text("not ours")
    first = to_braze_csv(_users(60), tmp_path / "b.csv", max_bytes=300)
    assert len(first) > 1
    second = to_braze_csv(_users(3), tmp_path / "b.csv", max_bytes=300)
    assert second == [tmp_path / "b.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.csv", "other-1-of-2.csv"]
    # And the other way: a split export replaces a whole file of the same name.
    third = to_braze_csv(_users(60), tmp_path / "b.csv", max_bytes=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in third] + ["other-1-of-2.csv"])


def test_a_failed_part_leaves_the_earlier_export_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    earlier = to_braze_csv(_users(60), tmp_path / "b.csv", max_bytes=300)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    fail_fsync(monkeypatch, call=2)
    with pytest.raises(OSError):  # the same two part names, other rows: one part fails
        to_braze_csv(_users(61), tmp_path / "b.csv", max_bytes=300)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no part lost, none added
    assert [p.name for p in earlier] == ["b-1-of-2.csv", "b-2-of-2.csv"]
