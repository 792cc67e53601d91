"""Installing the project pulls what it needs, also with the pip that ships with Python 3.11.

pip before 23.3 compares extra names literally: ``freqtrade[freqai_rl]`` does not match the
extra ``freqai-rl`` that freqtrade publishes, so pip warns and leaves stable-baselines3 out.
The resolution test runs that pip (ensurepip's bundled wheel) offline: every distribution of
this environment becomes a metadata-only wheel in a local folder, and so does this project, its
requirements copied verbatim from pyproject.toml (what ``pip install .`` would build, without
needing a build backend of a given version); ``pip install --dry-run --ignore-installed
--no-index --report`` then resolves it against exactly those versions, as a fresh venv would.
"""

from __future__ import annotations

import ensurepip
import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT

OWN_NAME = "freqtrade-advanced-learning"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _project_requirements() -> list[Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [Requirement(r) for r in data["project"]["dependencies"]]


def test_freqtrade_extras_with_published_spelling_match_verbatim():
    req = next(r for r in _project_requirements() if r.name == "freqtrade")
    published = set(md.distribution("freqtrade").metadata.get_all("Provides-Extra"))
    # Verbatim, not normalised: that is how pip 23.2 compares them.
    assert req.extras <= published, f"{sorted(req.extras - published)} not in {sorted(published)}"
    assert {"freqai", "freqai-rl", "hyperopt"} <= req.extras


def _wheel(folder: Path, name: str, version: str, metadata: str) -> None:
    info = f"{_norm(name)}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{_norm(name)}-{version}-py3-none-any.whl", "w") as z:
        z.writestr(f"{info}/METADATA", metadata)
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                   "Root-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")


def _metadata_wheels(folder: Path) -> None:
    """One metadata-only wheel per installed distribution (name, version, dependencies), and
    one for this project from pyproject.toml."""
    folder.mkdir()
    for dist in md.distributions():
        name = dist.metadata["Name"]
        if name and _norm(name) != _norm(OWN_NAME):
            _wheel(folder, name, dist.version, dist.read_text("METADATA") or "")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}",
             f"Version: {project['version']}", f"Requires-Python: {project['requires-python']}",
             *(f"Requires-Dist: {r}" for r in project["dependencies"])]
    _wheel(folder, project["name"], project["version"], "\n".join(lines) + "\n")


def test_plain_install_with_python_bundled_pip_resolves_stable_baselines3_and_optuna(tmp_path):
    bundled = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    if not bundled:
        pytest.skip("this Python was built without ensurepip's bundled pip")
    wheels = tmp_path / "wheels"
    _metadata_wheels(wheels)
    report = tmp_path / "report.json"
    # Only this folder: no index, no user or site pip configuration.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    done = subprocess.run(
        [sys.executable, str(bundled[-1] / "pip"), "install", "--dry-run", "--ignore-installed",
         "--no-index", "--find-links", str(wheels), "--report", str(report), "--quiet",
         OWN_NAME],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "does not provide the extra" not in done.stderr, done.stderr
    data = json.loads(report.read_text())
    assert data["pip_version"] == ensurepip.version()
    names = {_norm(item["metadata"]["name"]) for item in data["install"]}
    assert {"freqtrade", "stable_baselines3", "sb3_contrib", "gymnasium", "optuna",
            "torch"} <= names, sorted(names)
