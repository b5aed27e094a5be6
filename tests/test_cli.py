"""The command line, run in-process through main(argv) and once as a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from amptools import notebooks
from amptools.cli import main


def run(argv, stdin_text=None, monkeypatch=None):
    out, err = io.StringIO(), io.StringIO()
    if stdin_text is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin_text))
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def read_csv(path):
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize(
    ("text", "extra", "expected", "exit_code"),
    [
        ("user_id;plan\n007;pro\ntestUser;free\n", [], ["007", "testUser"], 1),  # Excel in Europe
        ("\ufeffdevice_id\nffff-ffff-ffff-ffff\n\n", [], ["ffff-ffff-ffff-ffff"], 0),
        ("testUser\n\nno-one\n  \n", [], ["no-one", "testUser"], 1),
        ("customer,plan\ntestUser,pro\n", ["--ids-column", "customer"], ["testUser"], 0),
    ],
)
def test_ids_files_of_every_shape(tmp_path, text, extra, expected, exit_code):
    ids = tmp_path / "ids.csv"
    ids.write_bytes(text.encode("utf-8"))
    code, _, stderr = run(["fetch", str(ids), "--sample", "--cohorts", "--out", str(tmp_path / "o"),
                           "--no-progress", *extra])
    summary = read_csv(tmp_path / "o" / "summary.csv")
    column = "device_id" if "device_id" in text else "user_id"
    assert sorted(row[column] for row in summary) == expected  # leading zeros kept
    assert code == exit_code, stderr


def test_a_missing_ids_column_is_named(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("customer,plan\ntestUser,pro\n", encoding="utf-8")
    code, _, stderr = run(["fetch", str(ids), "--sample", "--ids-column", "client",
                           "--out", str(tmp_path / "o")])
    assert code == 2 and "no column named 'client'" in stderr and "customer, plan" in stderr


def test_fetch_writes_every_table_and_marketing(tmp_path, monkeypatch):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\nno-such-user\n", encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, stderr = run(
        ["fetch", str(ids), "--sample", "--recs", "testRecId,testRecId2", "--props", "--cohorts",
         "--computations", "--out", str(out), "--marketing", "--marketing-rec-id", "testRecId",
         "--no-progress"])
    assert code == 1  # one user is unknown to the org
    assert "no-such-user: not_found" in stderr
    # What the run took of the org's quota, said at the end: 2 users, one merged request each
    # (+ the two-request way for the first users, which teaches the org's computation names).
    quota = next(line for line in stderr.splitlines() if line.startswith("amptools: quota:"))
    assert "requests in the last minute" in quota and "throttles" in quota
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["summary.csv", "recommendations.csv", "properties.csv", "cohorts.csv",
                            "cohort_matrix.csv", "computations.csv", "propensities.csv",
                            "failures.csv", "marketing.csv"])
    recs = read_csv(out / "recommendations.csv")
    assert [r["item"] for r in recs if r["rec_id"] == "testRecId"] == [
        "cookie", "cracker", "chocolate milk", "donut", "croissant"]
    assert {r["computation"]: r["raw"] for r in read_csv(out / "computations.csv")} == {
        "computed-prop-1": "5000000.0", "computed-prop-2": "3"}
    assert [r["user_id"] for r in read_csv(out / "failures.csv")] == ["no-such-user"]
    marketing = read_csv(out / "marketing.csv")
    assert marketing[0]["user_id"] == "testUser" and marketing[0]["rec_1"] == "cookie"


def test_fetch_writes_the_braze_files(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\nuser-000001\nuser-000002\n", encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, stderr = run(
        ["fetch", str(ids), "--sample", "--recs", "testRecId", "--props", "--cohorts", "--out", str(out),
         "--top-n", "3", "--braze", "--braze-json", "--no-progress"])
    assert code == 0, stderr
    data = (out / "braze_import.csv").read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf") and b"\r\n" not in data
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert [r["external_id"] for r in rows] == ["testUser", "user-000001", "user-000002"]
    assert rows[0]["rec_1"] == "cookie" and rows[0]["is_control"] == "false"
    lines = (out / "braze_track.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])["attributes"][0]
    assert len(lines) == 1 and first["external_id"] == "testUser"
    assert first["rec_items"] == ["cookie", "cracker", "chocolate milk"] and first["is_control"] is False
    assert "wrote 10 files" in stdout  # 7 tables, failures and the two Braze files


def test_a_table_braze_would_misread_costs_no_other_file(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\nuser-000001\nuser-000002\n", encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, stderr = run(["fetch", str(ids), "--sample", "--recs", "home-feed", "--props", "--out",
                                str(out), "--marketing", "--marketing-props", "country", "--braze",
                                "--no-progress"])
    assert code == 1 and "BrazeImportError" in stderr and "'country'" in stderr and "GB" in stderr
    assert (out / "marketing.csv").exists() and (out / "summary.csv").exists()
    assert not (out / "braze_import.csv").exists()
    # What was fetched and written is still said, and how to fix it from the command line.
    assert "<ProfileSet 2 ok, 0 not_found, 0 failed of 2 ids>" in stdout and "wrote 9 files" in stdout
    assert "--rename country=country_name" in stderr


def test_fetch_reads_stdin_and_device_ids(tmp_path, monkeypatch):
    code, stdout, _ = run(["fetch", "-", "--sample", "--id-type", "device_id", "--cohorts",
                           "--out", str(tmp_path), "--no-progress"],
                          stdin_text="ffff-ffff-ffff-ffff\n", monkeypatch=monkeypatch)
    assert code == 0, stdout
    assert [r["cohort_id"] for r in read_csv(tmp_path / "cohorts.csv")] == ["cohort1", "cohort3", "cohort7"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["fetch", "missing.csv", "--sample"], "no ids file"),
        (["fetch", "IDS", "--sample", "--recs", ",", "--rec-type", "model"], "rec_type"),
        (["fetch", "IDS"], "AMPLITUDE_SECRET_KEY is not set"),
        (["fetch", "IDS", "--sample", "--format", "nope"], "invalid choice"),
        (["nonsense"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2_with_a_message(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    ids = tmp_path / "ids.csv"
    ids.write_text("testUser\n", encoding="utf-8")
    argv = [str(ids) if a == "IDS" else a for a in argv]
    code, _, stderr = run(argv + ["--out", str(tmp_path / "o")] if argv[0] == "fetch" else argv)
    assert code == 2
    assert words in stderr + capsys.readouterr().err


def test_wrong_key_exits_3(tmp_path, monkeypatch, sample_server):
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", "not-the-key")
    monkeypatch.setenv("AMPLITUDE_PROFILE_API_URL", sample_server.url)
    ids = tmp_path / "ids.csv"
    ids.write_text("testUser\n", encoding="utf-8")
    code, _, stderr = run(["fetch", str(ids), "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 3 and "Invalid Api-Key" in stderr and "not-the-key" not in stderr


def test_help_is_complete(capsys):
    assert main(["fetch", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--recs", "--rec-type", "--props", "--cohorts", "--computations", "--predictions",
                 "--propensity-type", "--cache", "--rate-limit", "--workers", "--sample", "--out",
                 "--format", "--marketing", "--id-type"):
        assert flag in text


def test_console_script_runs_as_a_process(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "amptools", "fetch", str(ids), "--sample", "--props",
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "properties.csv").exists()


@pytest.mark.slow
def test_demo_writes_tables_marketing_and_an_html_report(tmp_path):
    code, stdout, stderr = run(["demo", "--out", str(tmp_path), "--users", "30"])
    assert code == 0, stderr
    assert "30 ok, 0 not_found, 0 failed of 30 ids" in stdout
    for name in ("summary.csv", "recommendations.csv", "marketing.csv", "report.ipynb", "report.html"):
        assert (tmp_path / name).stat().st_size > 0, name
    marketing = read_csv(tmp_path / "marketing.csv")
    assert len(marketing) == 30 and "gp:email" not in marketing[0]
    assert "note: Fetching recommendations logs" in stderr  # said as a note, once
    assert stderr.count("note: Fetching recommendations") == 1


def test_report_command_writes_a_notebook(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\n", encoding="utf-8")
    code, stdout, _ = run(["report", str(ids), "--sample", "--cohorts", "--out", str(tmp_path / "r.ipynb")])
    assert code == 0 and (tmp_path / "r.ipynb").exists() and "wrote" in stdout


def test_sample_server_command_serves_the_api(tmp_path):
    import socket
    import time

    import requests

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "amptools", "sample-server", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/v1/userprofile",
                                      params={"user_id": "testUser"}, timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the sample server did not start"
                time.sleep(0.2)
        assert answer.status_code == 401 and answer.text == "Missing Api-Key in Authorization header"
    finally:
        process.terminate()
        process.wait(timeout=10)


# ---------------------------------------------------------------------------- preview
def test_preview_fetches_what_the_tag_asks_and_writes_the_messages(tmp_path):
    from amptools import ProfileQuery, braze

    query = ProfileQuery(recs=("testRecId",))
    template = tmp_path / "message.liquid"
    template.write_text(braze.connected_content(query) + "\n" + braze.guard(query)
                        + "\nHi {{${first_name} | default: 'there'}}, try {{amplitude.userData.recommendations[0].items[0]}}"
                        " in {{${city}}}", encoding="utf-8")
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\nno-such-user\n", encoding="utf-8")
    attributes = tmp_path / "attributes.csv"
    attributes.write_text("user_id,first_name,city\ntestUser,Ann,\n", encoding="utf-8")
    out = tmp_path / "previews.csv"
    code, stdout, stderr = run(["preview", str(template), str(ids), "--sample", "--no-progress",
                                "--attributes", str(attributes), "--out", str(out)])
    assert code == 1, stderr  # no-such-user was not fetched: as with fetch
    assert "1 of the 2 users was not fetched:\n  no-such-user: not_found" in stderr
    assert "1 rendered, 1 aborted, 0 error" in stdout
    rows = {row["user_id"]: row for row in read_csv(out)}
    assert list(next(iter(rows.values()))) == list(braze.PREVIEW_COLUMNS)
    assert rows["testUser"]["message"] == "Hi Ann, try cookie in"
    assert rows["testUser"]["unresolved"] == "${city}"
    assert rows["no-such-user"]["status"] == "aborted"
    assert rows["no-such-user"]["abort_reason"] == "Profile API call failed"


def test_preview_reports_template_errors_and_usage(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\n", encoding="utf-8")
    broken = tmp_path / "broken.liquid"
    broken.write_text("Hi\n{% if %}", encoding="utf-8")
    code, _, stderr = run(["preview", str(broken), str(ids), "--sample", "--no-progress", "--props",
                           "--out", str(tmp_path / "p.csv")])
    assert code == 1 and "line 2: missing expression" in stderr
    assert read_csv(tmp_path / "p.csv")[0]["status"] == "error"
    code, _, stderr = run(["preview", str(tmp_path / "none.liquid"), str(ids), "--sample"])
    assert code == 2 and "no template" in stderr
    plain = tmp_path / "plain.liquid"
    plain.write_text("Hi {{${first_name}}}", encoding="utf-8")
    code, _, stderr = run(["preview", str(plain), str(ids), "--sample"])
    assert code == 2 and "connected_content" in stderr


# ---------------------------------------------------------------------------- issue 20.3
DOCS = Path(__file__).resolve().parent.parent / "docs"


def documented_command(page: str, starts: str) -> list[str]:
    """The command line of a ```bash block of docs/<page> that starts with ``starts``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            if line.startswith(starts):
                return shlex.split(line)
    raise AssertionError(f"no command starting {starts!r} in docs/{page}")


def test_the_documented_braze_example_runs_and_exits_0(tmp_path, monkeypatch):
    argv = documented_command("cli.md", "amptools fetch ids.csv --sample --recs home-feed --props --out out/")
    assert "--braze" in argv and "--braze-json" in argv and "country,plan" in argv
    monkeypatch.chdir(tmp_path)
    Path("ids.csv").write_text("user_id\ntestUser\nuser-000001\nuser-000002\nuser-000003\n", encoding="utf-8")
    code, stdout, stderr = run([*argv[1:], "--no-progress"])
    assert code == 0, stderr
    assert "<ProfileSet 4 ok, 0 not_found, 0 failed of 4 ids>" in stdout
    header = Path("out/braze_import.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "country_name" in header and "country" not in header and "plan" in header
    body = json.loads(Path("out/braze_track.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert "country_name" in body["attributes"][1]
    assert "country_name" in read_csv("out/marketing.csv")[0]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--rename", "country"], "expected OLD=NEW"),
        (["--rename", "county=country_name"], "the marketing table has no column 'county'"),
        (["--rename", "country=plan"], "'plan' would name two columns"),
        (["--rename", "country=user_id"], "'user_id' would name two columns"),
    ],
)
def test_renames_are_checked_before_the_fetch(tmp_path, extra, words, sample_server):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\n", encoding="utf-8")
    code, _, stderr = run(["fetch", str(ids), "--sample", "--recs", "home-feed", "--props", "--marketing",
                           "--marketing-props", "country,plan", "--out", str(tmp_path / "o"), *extra])
    assert code == 2 and words in stderr, stderr
    assert not (tmp_path / "o").exists()  # refused before anything was fetched or written
    code, _, stderr = run(["fetch", str(ids), "--sample", "--rename", "country=c", "--out", str(tmp_path / "o")])
    assert code == 2 and "only apply to the marketing table" in stderr


def test_one_user_not_fetched_is_said_in_the_singular(tmp_path):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\nno-such-user\n", encoding="utf-8")
    code, stdout, stderr = run(["fetch", str(ids), "--sample", "--cohorts", "--out", str(tmp_path / "o"),
                                "--no-progress"])
    assert code == 1
    assert "1 of the 2 users was not fetched:" in stderr and "were not" not in stderr
    assert "wrote 8 files" in stdout


class _StdinThatMustNotBeRead(io.StringIO):
    def read(self, *args):  # noqa: ARG002
        raise AssertionError("stdin was read: the ids file was taken as an option's value")


@pytest.mark.parametrize("option", ["--computations", "--recs", "--predictions"])
def test_an_ids_file_after_an_option_is_refused_not_waited_for(tmp_path, monkeypatch, option):
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", _StdinThatMustNotBeRead())
    for command in (["fetch", "--out", str(tmp_path / "o")], ["report", "--out", str(tmp_path / "r.ipynb")]):
        code, _, stderr = run([*command, "--sample", option, str(ids)])
        assert code == 2, stderr
        assert f"{option} {ids}: that is a file, not an id" in stderr
        assert f"amptools {command[0]} {ids} {option}" in stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / "r.ipynb").exists()


def test_reading_ids_from_a_terminal_says_so(tmp_path):
    import os
    import pty

    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "amptools", "fetch", "--sample", "--cohorts", "--no-progress",
             "--out", str(tmp_path / "o")],
            stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.write(primary, b"testUser\n\x04")  # a line, then Ctrl-D
        stdout, stderr = process.communicate(timeout=120)
    finally:
        os.close(primary)
        os.close(secondary)
    assert process.returncode == 0, stderr
    assert "the ids are read from this terminal, one per line; end with Ctrl-D" in stderr
    assert "1 ok, 0 not_found, 0 failed of 1 ids" in stdout


@pytest.mark.slow
def test_an_executed_report_exits_1_for_an_unknown_user_and_says_each_file_once(tmp_path, monkeypatch):
    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    ids = tmp_path / "ids.csv"
    ids.write_text("user_id\ntestUser\nno-such-user\n", encoding="utf-8")
    report = tmp_path / "r.ipynb"
    code, stdout, stderr = run(["report", str(ids), "--sample", "--cohorts", "--out", str(report), "--html"])
    assert code == 1, stderr
    assert "1 of the 2 users was not fetched:\n  no-such-user: not_found" in stderr
    assert stdout.count(f"wrote {report}") == 1 and stdout.count(f"wrote {report.with_suffix('.html')}") == 1
    assert "1 ok, 1 not_found, 0 failed" in stdout
    assert notebooks.fetch_outcome(report)["counts"] == {"ok": 1, "not_found": 1, "failed": 0}
    # Written but not run: nothing is fetched, so nothing is known yet.
    code, stdout, _ = run(["report", str(ids), "--sample", "--cohorts", "--out", str(tmp_path / "n.ipynb")])
    assert code == 0 and "ran" not in stdout
