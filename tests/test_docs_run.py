"""Every code block of README.md and docs/*.md runs as written, on the embedded sample org.

A page is run top to bottom the way a reader types it: its Python blocks in one
namespace (so a page starts with a visible setup block — ``import amptools as amp``,
``client = amp.connect()``, ``ids = ...`` — that later blocks build on), its shell blocks
command by command, all in a temporary folder of its own, with no Amplitude key in the
environment (so ``amp.connect()`` and ``--sample`` use the embedded sample org).

The tool is **Sybil** (https://sybil.readthedocs.io), chosen over pytest-examples and
pytest-markdown-docs because it is the one made for pages whose blocks build on each
other: one namespace per document (pytest-markdown-docs runs each block alone unless
the page's fences say ``continuation``, re-running the earlier blocks each time, and
pytest-examples runs each block alone and is mostly a linter of examples); doctest
blocks (``>>>`` with the output they print) checked inside a Markdown page with
doctest's own option flags; a skip directive that carries its reason
(``<!-- skip: next "why" -->``, invisible on GitHub, beside the block); and a small
parser interface for the shell blocks. It is well kept (releases through 2026) and
typed.

What the pages follow (and :func:`test_every_code_block_is_run_or_says_why_not` holds
them to):

- a ``python`` block is code a reader types; one that starts with ``>>>`` shows what it
  prints, and the printout is checked (``...`` stands for any text; white space is
  normalised);
- a ``bash`` block is command lines, run one by one with ``bash`` (a ``\\`` joins
  lines); each must exit 0, or the code its comment states (``# exit 1 ...``);
- signatures, file layouts, output and other languages go in ``text`` (or ``liquid``,
  ``sql``) blocks, which are not run;
- a block that cannot run here (it needs a real key, opens JupyterLab, runs until
  Ctrl-C) is preceded by ``<!-- skip: next "the reason" -->``; such blocks are few and
  each says why.

Fetching is paced as for any user (a fresh client starts at a fifth of its rate limit;
fetches of up to 27 users go at once), so the pages fetch few users, through one cache
file per page.
"""

from __future__ import annotations

import doctest
import os
import re
import shlex
import subprocess
import sys
import time
import unittest
from pathlib import Path

import pytest
from sybil import Sybil
from sybil.evaluators.skip import Skipper
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

RUN = {"python", "bash"}
NOT_RUN = {"text", "liquid", "sql"}
KEYS = ("AMPLITUDE_SECRET_KEY", "AMPLITUDE_API_KEY", "AMPLITUDE_PROFILE_API_URL")
COMMAND_TIMEOUT = 600
_FENCE = re.compile(r"^[ \t]*(?:[-*+][ \t]+)?```(?P<info>[^`\n]*)$", re.MULTILINE)
_SKIP = re.compile(r"<!--\s*skip:\s*(?P<action>\w+)(?P<rest>[^\n]*?)-->")
_EXIT = re.compile(r"#.*\bexit (?:code )?(\d+)\b")
_HEREDOC = re.compile(r"<<-?\s*'?(?P<word>\w+)'?")


def _commands(source: str) -> list[tuple[str, int]]:
    """A shell block's command lines, each with its expected exit code.

    A ``\\`` at the end of a line joins the next; a here-document (``<<'EOF'`` ... ``EOF``)
    belongs to its command.
    """
    commands: list[tuple[str, int]] = []
    lines = iter(source.splitlines())
    for line in lines:
        while line.rstrip().endswith("\\"):
            line = line.rstrip()[:-1].rstrip() + " " + next(lines, "").strip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        expected = _EXIT.search(line)
        heredoc = _HEREDOC.search(line)
        if heredoc:
            body = []
            for body_line in lines:
                body.append(body_line)
                if body_line.strip() == heredoc["word"]:
                    break
            else:
                raise AssertionError(f"a here-document is not closed by {heredoc['word']}: {line!r}")
            line = "\n".join([line, *body])
        commands.append((line.strip(), int(expected[1]) if expected else 0))
    return commands


def _environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in KEYS}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def run_shell_block(example) -> None:
    """Run each command line of a ``bash`` block in the current folder and check its exit code."""
    for command, expected in _commands(str(example.parsed)):
        started = time.perf_counter()
        result = subprocess.run(["bash", "-c", command], cwd=os.getcwd(), env=_environment(),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT)
        if result.returncode != expected:
            raise AssertionError(
                f"{Path(example.path).name}, line {example.line}: `{command}` exited "
                f"{result.returncode}, not {expected} ({time.perf_counter() - started:.1f} s)\n"
                f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")


SYBIL = Sybil(parsers=[
    PythonCodeBlockParser(doctest_optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE),
    CodeBlockParser(language="bash", evaluator=run_shell_block),
    SkipParser(),
])


def _label(page: Path) -> str:
    return str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name


def run_page(page: Path) -> tuple[int, list[tuple[int, str]]]:
    """Run every block of ``page`` in the current folder: (blocks run, [(line, why) skipped])."""
    ran, skipped = 0, []
    for example in SYBIL.parse(page):
        try:
            example.evaluate()
            if isinstance(example.region.evaluator, Skipper):
                continue  # the directive itself, not a block
        except unittest.SkipTest as reason:
            skipped.append((example.line, str(reason)))
            continue
        except BaseException as error:
            error.add_note(f"(the code block of {_label(page)} at line {example.line}, run as written)")
            raise
        ran += 1
    return ran, skipped


@pytest.fixture
def reader(tmp_path, monkeypatch):
    """A reader's setting: a fresh folder, no key in the environment, and a fresh process's
    sample org — as in a new notebook kernel, ``amp.connect()`` starts its own (and says
    so), with a budget that has not paced anything yet."""
    from amptools import connection
    from amptools.budget import CACHE_DIR_VARIABLE

    for name in KEYS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(CACHE_DIR_VARIABLE, str(tmp_path / ".amptools-cache"))
    (tmp_path / "page").mkdir()
    monkeypatch.chdir(tmp_path / "page")
    server = connection.new_sample_server().start()
    monkeypatch.setattr(connection, "_shared", server)
    monkeypatch.setattr(connection, "_announced", set())
    yield tmp_path / "page"
    server.stop()


# Pages whose shell blocks start many amptools processes (a sample org each, a notebook
# kernel for report and demo) take tens of seconds: slow tests. The others, the README
# among them, run in the quick loop.
SLOW_PAGES = {"docs/cli.md", "docs/cohorts.md"}


@pytest.mark.parametrize("page", [pytest.param(page, marks=pytest.mark.slow) if _label(page) in SLOW_PAGES else page
                                  for page in PAGES], ids=_label)
def test_the_code_blocks_of_a_page_run_as_written(page, reader):
    started = time.perf_counter()
    ran, skipped = run_page(page)
    print(f"{_label(page)}: {ran} blocks ran, {len(skipped)} not run, in {time.perf_counter() - started:.1f} s")
    for line, why in skipped:
        print(f"  line {line}: not run: {why}")


@pytest.mark.parametrize("page", PAGES, ids=_label)
def test_every_code_block_is_run_or_says_why_not(page):
    text = page.read_text(encoding="utf-8")
    fences = [match["info"].strip() for match in _FENCE.finditer(text)]
    opening = fences[0::2]
    assert all(not info for info in fences[1::2]), f"{_label(page)}: a fence is not closed where it should be"
    for info in opening:
        assert info in RUN | NOT_RUN, (
            f"{_label(page)}: a code block says {info!r}: write python or bash (run), or "
            f"{', '.join(sorted(NOT_RUN))} (not run)")
    for match in _SKIP.finditer(text):
        assert match["action"] == "next" and re.fullmatch(r'\s*"[^"]{10,}"\s*', match["rest"]), (
            f"{_label(page)}: {match[0]!r}: skip one block at a time and say why, "
            '<!-- skip: next "the reason" -->')
    skips = len(_SKIP.findall(text))
    run = sum(info in RUN for info in opening)
    assert skips <= max(2, run // 4), f"{_label(page)}: {skips} of {run} blocks are not run"


def test_a_shell_block_is_split_into_its_command_lines():
    source = ("# a comment\n"
              "amptools fetch ids.csv --sample \\\n"
              "    --recs home-feed --out out/\n"
              "\n"
              "amptools report ids.csv --sample   # exit 1: no-such-user is listed\n")
    assert _commands(source) == [
        ("amptools fetch ids.csv --sample --recs home-feed --out out/", 0),
        ("amptools report ids.csv --sample   # exit 1: no-such-user is listed", 1),
    ]
    assert shlex.split(_commands(source)[0][0])[:2] == ["amptools", "fetch"]
    heredoc = "cat > m.liquid <<'EOF'\nHi {{x}}\n\nBye\nEOF\nls m.liquid\n"
    assert _commands(heredoc) == [("cat > m.liquid <<'EOF'\nHi {{x}}\n\nBye\nEOF", 0), ("ls m.liquid", 0)]


def test_a_failing_block_fails_the_page(tmp_path, monkeypatch):
    # The machinery itself: a wrong printout, a failing command and an exception are failures.
    monkeypatch.chdir(tmp_path)
    for body, kind in ((">>> 1 + 1\n3", AssertionError), ("raise ValueError('x')", ValueError)):
        page = tmp_path / "page.md"
        page.write_text(f"# A page\n\n```python\n{body}\n```\n", encoding="utf-8")
        with pytest.raises(kind):
            run_page(page)
    page.write_text("```bash\nfalse\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="exited 1, not 0"):
        run_page(page)
    page.write_text('<!-- skip: next "needs a real key here" -->\n```python\nraise SystemExit\n```\n'
                    "```python\nx = 1\n```\n", encoding="utf-8")
    assert run_page(page) == (1, [(2, "needs a real key here")])
