"""``make mutate``: mutation testing of the promises that are hardest to see.

mutmut (configured in ``[tool.mutmut]`` of pyproject.toml) changes one thing at a time
in the pacing (``amptools/ratelimit.py``), the machine's budget (``amptools/budget.py``)
and the client's retries and body reading (the functions of ``amptools/transport.py``
and ``amptools/client.py`` named below), runs the tests that reach the changed function,
and counts the mutants no test noticed. This prints the score per module and every
survivor; a survivor is either killed by a new test or explained in a ``# mutmut:``
comment beside the code (an equivalent mutant), marked ``# pragma: no mutate``.

Not part of ``make test``: a first full run takes hours on two cores. A second run
resumes: it tests the mutants never tested (new, or of a function that changed: mutmut
forgets those verdicts) and the survivors again (a new test may catch them); a killed
mutant stays killed. ``--all`` tests every selected mutant again (after tests were removed
or weakened).

    python tools/mutate.py            # resume, then print the score and the survivors
    python tools/mutate.py --all      # test every selected mutant again
    python tools/mutate.py --report   # print them from the last run
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Whole modules, and the retry and body-reading parts of the client.
SELECTION = [
    "amptools.ratelimit.*",
    "amptools.budget.*",
    *(f"amptools.transport.x_{name}__mutmut_*" for name in (
        "should_retry", "jitter", "retry_delay", "parse_retry_after", "call_with_retries",
        "_inflater", "read_body", "exchange", "checked_seconds", "checked_timeout", "_is_seconds")),
    "amptools.transport.xǁRetryPolicyǁ*",
    *(f"amptools.client.xǁProfileClientǁ{name}__mutmut_*" for name in (
        "__init__", "request", "_before_retry", "_send_once", "_exchange")),
    "amptools.client.x_map_response__mutmut_*",
]

LINE = re.compile(r"^\s*(?P<name>amptools\.\S+?__mutmut_\d+): (?P<status>.+?)\s*$")


def mutmut(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=ROOT, text=True,
                          capture_output=True, check=False)


def results() -> dict[str, str]:
    answer = mutmut("results", "--all", "true")
    if answer.returncode != 0:
        sys.exit(f"mutmut results failed:\n{answer.stderr}")
    found = {}
    for line in answer.stdout.splitlines():
        match = LINE.match(line)
        if match:
            found[match["name"]] = match["status"]
    return found


def module_of(name: str) -> str:
    return ".".join(name.split(".")[:2])


def selected(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SELECTION)


def report(found: dict[str, str]) -> int:
    """The score of the selected mutants tested so far: killed (a timeout counts as caught:
    the mutant hung a test) over tested; "not checked" ones are waiting for a run."""
    by_module: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for name, status in found.items():
        if selected(name):
            by_module[module_of(name)][status] += 1
    survivors = sorted(name for name, status in found.items()
                       if selected(name) and status not in ("killed", "timeout", "not checked"))
    print(f"{'module':22} {'mutants':>8} {'tested':>7} {'caught':>7} {'score':>7}  not caught")
    total = tested = caught = 0
    for module, counts in sorted(by_module.items()):
        n = sum(counts.values())
        t = n - counts["not checked"]
        c = counts["killed"] + counts["timeout"]
        total, tested, caught = total + n, tested + t, caught + c
        others = ", ".join(f"{count} {status}" for status, count in sorted(counts.items())
                           if status not in ("killed", "timeout", "not checked"))
        print(f"{module:22} {n:8} {t:7} {c:7} {c / max(t, 1):7.1%}  {others}")
    print(f"{'all':22} {total:8} {tested:7} {caught:7} {caught / max(tested, 1):7.1%}")
    if survivors:
        print("\nNot caught (see one with: .venv/bin/mutmut show NAME):")
        for name in survivors:
            print(f"  {name}: {found[name]}")
    return 1 if survivors else 0


# mutmut tests again every mutant named on its command line, and with no name every
# mutant of the files (not only the selected functions): so the names to test are chosen
# here, after mutmut has made the mutants of what changed (which resets their verdicts).
GENERATE = ("from mutmut.__main__ import create_mutants; "
            "from mutmut.mutation.trampoline import set_mutant_under_test; "
            "set_mutant_under_test('mutant_generation'); create_mutants(1)")
DONE = ("killed", "timeout")


def to_test(found: dict[str, str], everything: bool) -> list[str]:
    """The selected mutants a run tests: all of them, or those without a kill yet."""
    return sorted(name for name, status in found.items()
                  if selected(name) and (everything or status not in DONE))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only print the last run's results")
    parser.add_argument("--all", action="store_true", help="test every selected mutant again")
    # Most of the tests wait on a real server (a fifth of their time is CPU): more children
    # than cores keep the cores busy.
    parser.add_argument("--children", type=int, default=3 * (os.cpu_count() or 1),
                        help="mutants tested at once (default: three per core)")
    options = parser.parse_args()
    if not options.report:
        made = subprocess.run([sys.executable, "-c", GENERATE], cwd=ROOT, check=False,
                              capture_output=True, text=True)
        if made.returncode != 0:
            sys.exit(f"mutmut could not make the mutants:\n{made.stderr}")
        names = to_test(results(), options.all)
        print(f"{len(names)} mutants to test" + ("" if options.all else " (never tested, or not caught yet)"))
        if names:
            run = subprocess.Popen([sys.executable, "-m", "mutmut", "run", "--max-children", str(options.children),
                                    *names], cwd=ROOT)
            try:
                code = run.wait()
            except KeyboardInterrupt:  # mutmut had the same Ctrl-C: it stops and keeps its verdicts
                code = run.wait()
                print("stopped: the verdicts so far are kept, and the next run resumes")
            if code not in (0, 1, -signal.SIGINT):
                return code
    return report(results())


if __name__ == "__main__":
    sys.exit(main())
