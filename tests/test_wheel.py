"""A wheel built from the repository works on its own, outside the checkout.

The wheel is built from a copy of the sources (so a stale ``build/`` folder cannot
lend it files), installed with ``--no-deps`` into a fresh virtualenv in a temporary
folder, and run from another temporary folder with ``PYTHONPATH`` unset: the demo and
the sample server must find everything they read in the installed package.

The dependencies come from the running environment's site-packages, named in a
``.pth`` file of the new venv. A folder added by a ``.pth`` line is not a site dir, so
the ``.pth`` files inside it (the checkout's editable-install finder among them) are
not processed; the tests check that ``amptools`` really is imported from the wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "amptools"
# Files of the checkout's package folder that are not meant to be in the wheel.
NOT_SHIPPED = {"__pycache__"}
# What the kernel prints on stderr when its transport is not encrypted (issue 14).
KERNEL_WARNING = re.compile(r"without encryption|IPKernelApp\] WARNING")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@dataclass(frozen=True)
class Installed:
    """The built wheel and the fresh virtualenv it is installed in."""

    wheel: Path
    venv: Path
    python: Path
    script: Path
    workdir: Path

    def env(self) -> dict[str, str]:
        """The environment of a user who only has the venv: no PYTHONPATH, its bin first."""
        env = {key: value for key, value in os.environ.items()
               if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}}
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.venv)
        # The dependencies' data files (nbconvert's templates, the kernelspec) live under
        # the running environment's prefix; installed with the wheel they would be in the
        # venv's own, which Jupyter searches anyway.
        env["JUPYTER_PATH"] = os.pathsep.join(filter(None, [str(Path(sys.prefix, "share", "jupyter")),
                                                             env.get("JUPYTER_PATH")]))
        return env

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        """Run a command of the venv in the work folder outside the checkout."""
        return subprocess.run(list(args), cwd=self.workdir, env=self.env(), capture_output=True,
                              text=True, timeout=timeout)


def _outside_checkout(path: Path) -> Path:
    assert not path.resolve().is_relative_to(ROOT), f"{path} is inside the checkout {ROOT}"
    return path


def _dependency_dirs() -> list[str]:
    """The running environment's site-packages, where amptools' dependencies are."""
    paths = sysconfig.get_paths()
    candidates = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    return list(dict.fromkeys(p for p in candidates if os.path.isdir(p)))


def _pip(*args: str) -> None:
    # No index: the build backend and the dependencies are already here, nothing is fetched.
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--no-index",
                             "--disable-pip-version-check", "--quiet"],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"pip {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """Build the wheel, install it in a new venv outside the checkout."""
    base = _outside_checkout(tmp_path_factory.mktemp("wheel"))
    source = base / "source"
    shutil.copytree(PACKAGE, source / "amptools", ignore=shutil.ignore_patterns(*NOT_SHIPPED, "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(source))
    (wheel,) = (base / "dist").glob("amptools-*.whl")

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    _pip("--python", str(python), "install", "--no-deps", str(wheel))
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "amptools_test_dependencies.pth").write_text(
        "".join(f"{folder}\n" for folder in _dependency_dirs()), encoding="utf-8")

    workdir = base / "work"
    workdir.mkdir()
    yield Installed(wheel=wheel, venv=venv, python=python, script=venv / "bin" / "amptools", workdir=workdir)


def test_the_wheel_ships_every_file_of_the_package(installed: Installed) -> None:
    in_wheel = {name for name in zipfile.ZipFile(installed.wheel).namelist()
                if name.startswith("amptools/")}
    in_checkout = {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*")
                   if path.is_file() and not NOT_SHIPPED.intersection(path.parts)
                   and path.suffix != ".pyc"}
    assert in_checkout - in_wheel == set(), "package files missing from the wheel (pyproject package-data)"
    assert {"amptools/py.typed", "amptools/sample/org.json"} <= in_wheel


def test_amptools_is_imported_from_the_wheel_not_the_checkout(installed: Installed) -> None:
    probe = (
        "import json, sys, amptools\n"
        "from amptools.sample import SampleOrg, load_definition\n"
        "from amptools.sample.dataset import ORG_DEFINITION_PATH\n"
        "from pathlib import Path\n"
        "print(json.dumps({'file': amptools.__file__, 'definition': str(ORG_DEFINITION_PATH),\n"
        "  'keys': sorted(load_definition()), 'users': SampleOrg().n_users,\n"
        "  'typed': (Path(amptools.__file__).parent / 'py.typed').is_file(),\n"
        "  'editable': sorted(m for m in sys.modules if 'editable' in m)}))\n"
    )
    result = installed.run(str(installed.python), "-c", probe)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    venv = installed.venv.resolve()
    assert Path(seen["file"]).resolve().is_relative_to(venv), seen["file"]
    assert Path(seen["definition"]).resolve().is_relative_to(venv), seen["definition"]
    assert not Path(seen["file"]).resolve().is_relative_to(ROOT)
    assert seen["editable"] == [], "the checkout's editable-install finder was loaded"
    assert seen["keys"] and seen["users"] > 0 and seen["typed"]


def test_the_installed_demo_writes_its_files_and_no_kernel_warning(installed: Installed) -> None:
    out = installed.workdir / "demo-out"
    result = installed.run(str(installed.script), "demo", "--out", str(out), "--users", "40")
    assert result.returncode == 0, result.stderr
    for name in ("marketing.csv", "report.html", "report.ipynb", "summary.csv", "recommendations.csv",
                 "properties.csv", "cohorts.csv"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "user_id" in (out / "summary.csv").read_text(encoding="utf-8").splitlines()[0]
    assert "<html" in (out / "report.html").read_text(encoding="utf-8").lower()
    assert not KERNEL_WARNING.search(result.stderr), result.stderr


def test_the_installed_sample_server_answers_until_ctrl_c(installed: Installed) -> None:
    server = subprocess.Popen([str(installed.script), "sample-server", "--port", "0"], cwd=installed.workdir,
                              env=installed.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = []
        for line in server.stdout:  # type: ignore[union-attr]
            banner.append(line)
            if line.startswith("Press Ctrl-C"):
                break
        text = "".join(banner)
        url = re.search(r"sample server: (http://127\.0\.0\.1:\d+)/", text)
        key = re.search(r"local key \(not a real Amplitude key\): (\S+)", text)
        # stderr is merged in: a server that died shows its traceback here.
        assert url and key, f"no URL or key in the sample server's banner:\n{text}"
        fetch = ("import os, amptools\n"
                 "client = amptools.ProfileClient(os.environ['SAMPLE_KEY'],\n"
                 "                                base_url=os.environ['SAMPLE_URL'])\n"
                 "profile = client.get_profile('testUser', query=amptools.ProfileQuery(amp_props=True))\n"
                 "print(profile.user_id, len(profile.amp_props or {}))\n")
        env = {**installed.env(), "SAMPLE_KEY": key.group(1), "SAMPLE_URL": url.group(1)}
        answer = subprocess.run([str(installed.python), "-c", fetch], cwd=installed.workdir, env=env,
                                capture_output=True, text=True, timeout=120)
        assert answer.returncode == 0, answer.stderr
        user_id, n_props = answer.stdout.split()
        assert user_id == "testUser" and int(n_props) > 0
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
        stdout, _ = server.communicate(timeout=30)
    assert server.returncode == 0, stdout
    assert "stopped." in stdout
