"""Fixtures for the browser tests (`make test-browser`): a throwaway git repository holding a copy of the
notebooks, a JupyterLab serving it, and a headless Chromium driven by Playwright.

The notebooks are copied, never opened in place: whatever JupyterLab writes on save (or a test that
fails half-way) lands in the copy, and the developer's tree is never touched. The copy is committed in
its own repository, so `git status` there says exactly what opening and saving changed.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO_ROOT / "build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling Google's services, and on a closed
# network those connections are refused (slow start, noisy logs).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# JupyterLab settings for the test's own settings folder (the developer's settings are not read):
# every cell rendered at once (no windowing, so every output is in the page to check), no autosave
# (only the test saves), no news or update checks (no network).
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "kernelShutdown": True},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def workspace():
    """A throwaway git repository with a committed copy of notebooks/: JupyterLab's root folder."""
    root = Path(tempfile.mkdtemp(prefix="mmkd-browser-"))
    repo = root / "repo"
    shutil.copytree(REPO_ROOT / "notebooks", repo / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    git(repo.parent, "init", "-q", str(repo))
    (repo / ".gitignore").write_text(".ipynb_checkpoints/\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-q", "-m", "copy")
    yield repo
    shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab(workspace):
    """A JupyterLab serving the workspace, with the venv's kernels; yields its base URL and token."""
    settings = workspace.parent / "settings"
    for plugin, values in LAB_SETTINGS.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(workspace.parent / "runtime")}
    log = open(workspace.parent / "lab.log", "w")
    command = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser", f"--port={port}",
               "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={workspace}",
               f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspace.parent / 'lab-workspaces'}",
               "--LabApp.expose_app_in_browser=True", "--NotebookNotary.db_file=:memory:",
               "--LabApp.news_url=", "--ServerApp.terminals_enabled=False"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    server = subprocess.Popen(command, cwd=workspace, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"JupyterLab did not start; its log:\n{(workspace.parent / 'lab.log').read_text()}")
            time.sleep(0.3)
    yield {"url": url, "token": token, "log": workspace.parent / "lab.log"}
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(workspace.parent / "lab.log", SCREENSHOTS / "jupyterlab.log")  # beside the screenshots, for a failure


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test-browser` installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="mmkd-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="session")
def page(browser, lab):
    """JupyterLab loaded in a tab; errors thrown in the page are collected in `page.errors`."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.pages[0] if browser.pages else browser.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(f"{lab['url']}/lab?token={lab['token']}&reset")
    page.wait_for_function("window.jupyterapp && window.jupyterapp.started", timeout=60_000)
    page.evaluate("window.jupyterapp.restored")
    page.evaluate("window.jupyterapp.shell.collapseLeft()")  # the notebook gets the page's width
    return page
