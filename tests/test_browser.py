"""The explorer notebook in a real JupyterLab, driven by headless chromium.

The test waits for *rendered* output (a widget button, an HTML table, a plotly
plot inside ``.jp-OutputArea-output``), never for text that the cells' source
already holds, so it fails when the widget does not render.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "05_explorer.ipynb"
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
# Bounded waits (milliseconds for Playwright, seconds otherwise); the whole test
# normally takes 20–40 s.
SERVER_START_S = 60
PAGE_MS = 45_000
KERNEL_MS = 45_000
WIDGET_MS = 60_000
FETCH_MS = 45_000

pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]


def _require_browser() -> None:
    """Skip without chromium or Playwright, unless AMPTOOLS_REQUIRE_BROWSER=1 (CI): then fail."""
    required = os.environ.get("AMPTOOLS_REQUIRE_BROWSER") == "1"
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("playwright is not installed (pip install playwright)")
    if problems:
        message = "; ".join(problems)
        if required:
            pytest.fail(f"AMPTOOLS_REQUIRE_BROWSER=1 but {message}")
        pytest.skip(f"{message}; with AMPTOOLS_REQUIRE_BROWSER=1 (as in CI) this fails instead")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return None


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """JupyterLab on a free loopback port serving a copy of the explorer notebook.

    Yields ``(base_url, token, notebook_dir)``; always shuts the server down.
    """
    _require_browser()
    notebook_dir = tmp_path / "notebooks"
    notebook_dir.mkdir()
    shutil.copy(NOTEBOOK, notebook_dir / NOTEBOOK.name)
    token = secrets.token_hex(16)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "AMPLITUDE_SECRET_KEY"}
    # A fresh Jupyter state: no user settings, workspaces or news pop-ups leak in.
    for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_RUNTIME_DIR", "runtime"),
                      ("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
                      ("IPYTHONDIR", "ipython")):
        (tmp_path / sub).mkdir()
        env[name] = str(tmp_path / sub)
    # Silence the "news" and update notifications that would cover the notebook.
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}), encoding="utf-8")
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
        f"--ServerApp.token={token}", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--ServerApp.root_dir={notebook_dir}",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    log_path = tmp_path / "jupyterlab.log"
    log = log_path.open("wb")
    process = subprocess.Popen(command, cwd=notebook_dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while _status(f"{base}/api/status?token={token}") != 200:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}:\n{log_path.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_S}s:\n"
                            f"{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.25)
        yield base, token, notebook_dir
    finally:
        _shutdown(process, base, token)
        log.close()
        shutil.copy(log_path, _artifacts() / "jupyterlab.log")


def _shutdown(process: subprocess.Popen[bytes], base: str, token: str) -> None:
    """Ask the server to stop (it stops its kernels too), then make sure it did."""
    if process.poll() is None:
        try:
            request = urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST")
            urllib.request.urlopen(request, timeout=5).close()
        except OSError:
            pass
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    # The server ran in its own process group (kernel included): end that group.
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


def _run_all_cells(page: object) -> None:
    """Run → Run All Cells from the menu bar; the keyboard when the menu does not answer."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click(timeout=10_000)
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click(timeout=10_000)
        return
    except PlaywrightError:
        page.keyboard.press("Escape")
    # Fallback: select the first cell in command mode and run each cell with Shift+Enter.
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.keyboard.press("Escape")
    for _ in range(page.locator(".jp-Notebook .jp-Cell").count()):
        page.keyboard.press("Shift+Enter")


def test_explorer_renders_fetches_and_charts_in_jupyterlab(jupyterlab: tuple[str, str, Path]) -> None:
    from playwright.sync_api import sync_playwright

    base, token, notebook_dir = jupyterlab
    started = time.monotonic()
    shot = _artifacts() / "explorer.png"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(notebook_dir.parent / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1400, "height": 1100},
        )
        page = context.pages[0] if context.pages else context.new_page()
        try:
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", timeout=PAGE_MS)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=PAGE_MS)
            # The kernel is ready when the status bar reads "Python 3 (ipykernel) | Idle".
            page.get_by_text(re.compile(r"\|\s*Idle")).first.wait_for(timeout=KERNEL_MS)
            _run_all_cells(page)

            # A rendered widget, not the words of the source.
            fetch = page.locator(".jp-OutputArea-output .widget-button", has_text=re.compile(r"^\s*Fetch\s*$"))
            fetch.first.wait_for(state="visible", timeout=WIDGET_MS)
            assert fetch.count() == 1
            assert page.locator(".jp-OutputArea-output .widget-tab").count() >= 1
            assert page.locator(".jp-OutputArea-output table").count() == 0  # nothing fetched yet
            fetch.first.click()

            # The Summary tab's table, holding the sample pick (testUser first).
            table = page.locator(".jp-OutputArea-output table", has_text="testUser").first
            table.wait_for(state="visible", timeout=FETCH_MS)
            header = table.locator("th").all_inner_texts()
            assert "user_id" in header and "status" in header, header
            rows = table.locator("tbody tr")
            assert rows.count() == 10, rows.count()  # the default pick: 10 users
            first_row = rows.first.locator("td").all_inner_texts()
            assert first_row[0] == "testUser" and "ok" in first_row, first_row
            status_text = page.locator(".jp-OutputArea-output .widget-html",
                                       has_text=re.compile(r"\d+ fetched")).first
            assert "10 fetched" in status_text.inner_text()
            # The exposure note, shown once.
            assert page.locator(".jp-OutputArea-output", has_text="recommendation exposure event").count() == 1
            table.scroll_into_view_if_needed()
            page.screenshot(path=str(_artifacts() / "explorer-table.png"))

            # The Charts tab renders a plotly figure with bars.
            page.locator(".jp-OutputArea-output .lm-TabBar-tab", has_text=re.compile(r"^Charts$")).click()
            plot = page.locator(".jp-OutputArea-output .js-plotly-plot").first
            plot.wait_for(state="visible", timeout=FETCH_MS)
            page.locator(".jp-OutputArea-output .js-plotly-plot .trace").first.wait_for(timeout=FETCH_MS)
            assert plot.locator(".trace").count() >= 1
            title = plot.locator(".gtitle").first.text_content() or ""
            assert "items" in title.lower(), title
            plot.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
        except BaseException:
            page.screenshot(path=str(_artifacts() / "explorer-failure.png"))
            raise
        finally:
            context.close()
    assert shot.stat().st_size > 10_000
    assert time.monotonic() - started < 120
