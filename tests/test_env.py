"""mmkd_utils.env: seeding repeats, bad seeds and unavailable devices are refused clearly."""
from __future__ import annotations

import importlib.metadata
import random

import numpy as np
import pytest
import torch

import mmkd_utils


@pytest.fixture(autouse=True)
def keep_thread_count():
    """setup() sets torch's thread count for the whole process: put it back for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def draws() -> tuple:
    return torch.rand(5), np.random.rand(3), random.random()


def test_setup_twice_gives_identical_draws(capsys):
    mmkd_utils.setup(seed=0)
    first = draws()
    mmkd_utils.setup(seed=0, verbose=False)
    second = draws()
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1]) and first[2] == second[2]
    assert "seed: 0" in capsys.readouterr().out


def test_different_seeds_give_different_draws():
    mmkd_utils.seed_everything(0)
    a = torch.rand(5)
    mmkd_utils.seed_everything(1)
    assert not torch.equal(a, torch.rand(5))


def test_setup_returns_the_device_and_prints_versions(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device = mmkd_utils.setup(seed=3, device="cpu", threads=1)
    out = capsys.readouterr().out
    assert device == torch.device("cpu")
    assert "device: cpu | seed: 3 | CPU threads: 1" in out
    assert f"torch {importlib.metadata.version('torch')}" in out


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seeds_are_refused(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        mmkd_utils.seed_everything(seed)


def test_cuda_asked_for_but_absent_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        mmkd_utils.pick_device("cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        mmkd_utils.setup(device="cuda:0", verbose=False)


def test_automatic_choice_without_accelerators_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert mmkd_utils.pick_device() == torch.device("cpu")


def test_library_versions_name_the_libraries():
    versions = mmkd_utils.library_versions()
    assert torch.__version__.startswith(versions["torch"])
    assert set(versions) >= {"python", "mmkd_utils", "torch", "torchvision", "transformers", "datasets"}


def test_colab_keeps_its_torch_and_local_installs_stay_pinned():
    """The Colab setup cell runs `pip install /content/mmkd`, which reads requirements.txt: with only lower
    bounds on torch and torchvision, pip keeps Colab's newer preinstalled torch instead of downgrading it.
    The Makefile (local machines, CI) adds constraints.txt, which pins them to what the registry serves."""
    import re

    from conftest import REPO_ROOT

    requirements = (REPO_ROOT / "requirements.txt").read_text(encoding="utf8")
    for package in ("torch", "torchvision", "datasets"):
        line = re.search(rf"^{package}([<>=!~].*)?$", requirements, flags=re.M)
        assert line and "<" not in line.group(0), f"requirements.txt caps {package}: Colab's would be downgraded"
    constraints = (REPO_ROOT / "constraints.txt").read_text(encoding="utf8")
    assert re.search(r"^torch<=", constraints, flags=re.M) and re.search(r"^torchvision<=", constraints, flags=re.M)
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf8")
    assert "-c constraints.txt" in makefile and "constraints.txt" in makefile.split("$(STAMP):")[1].splitlines()[0]
    setup_cell = "!pip install -q /content/mmkd"
    notebook = (REPO_ROOT / "notebooks" / "00_setup_and_tour.ipynb").read_text(encoding="utf8")
    assert setup_cell in notebook and "constraints" not in notebook  # Colab installs without the pins


def test_colab_install_command_keeps_the_preinstalled_libraries(tmp_path):
    """What the notebooks' setup cell runs on Colab, `pip install -q /content/mmkd`, asked of pip as a dry run in
    this environment (torch, torchvision, transformers and datasets already installed, as on Colab): pip installs
    the course and keeps each of them. Needs the package index (pip fetches setuptools to build the course's
    metadata); without it the test fails saying so, within the timeout, instead of hanging."""
    import json
    import subprocess
    import sys

    from conftest import REPO_ROOT

    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--report", str(report), "--quiet",
               "--disable-pip-version-check", "--timeout", "15", "--retries", "1", str(REPO_ROOT)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(command)}` took over 150 s: is the package index (PyPI) reachable from here?")
    errors = "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("WARNING: Location"))
    assert proc.returncode == 0, (f"pip's dry run of the Colab install failed (it needs the package index, PyPI; "
                                  f"offline, this test cannot run):\n{errors[-2000:]}")
    installs = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
                for item in json.loads(report.read_text(encoding="utf8"))["install"]}
    assert "mmkd-utils" in installs  # the report is the course's install
    replaced = {name: version for name, version in installs.items()
                if name in ("torch", "torchvision", "transformers", "datasets")}
    assert not replaced, (f"`pip install /content/mmkd` would replace the installed {replaced}: requirements.txt "
                          "must accept the versions already installed (lower bounds; caps only where needed)")


def test_oldest_pins_are_the_lower_bounds_that_ci_tests():
    """`make test-oldest` (run by .ci/run) installs requirements-oldest.txt: each pin must be exactly the lower
    bound requirements.txt claims, so that raising a bound means raising its pin, and the claim stays tested."""
    import re

    from conftest import REPO_ROOT
    from packaging.version import Version

    def specs(path, operator):
        text = (REPO_ROOT / path).read_text(encoding="utf8")
        return {m[1].lower(): m[2] for m in re.finditer(rf"^([A-Za-z0-9_.-]+){operator}([0-9][^,\s#]*)", text, flags=re.M)}

    lower_bounds, pins = specs("requirements.txt", ">="), specs("requirements-oldest.txt", "==")
    assert {"transformers", "datasets", "numpy", "pillow"} <= set(pins)
    assert {name: pin for name, pin in pins.items() if name not in lower_bounds or Version(lower_bounds[name]) != Version(pin)} == {}, \
        f"requirements-oldest.txt must pin each package at its lower bound in requirements.txt: {lower_bounds}"
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf8")
    assert "requirements-oldest.txt" in makefile and re.search(r"^check: .*\btest-oldest\b", makefile, re.M)  # .ci/run: make check
