"""requirements.lock (what the Docker image installs) pins every runtime dependency."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
_PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;]+)", re.MULTILINE)


def test_the_lock_pins_each_dependency_within_its_range() -> None:
    """A dependency added to pyproject.toml without refreshing the lock fails here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = {
        canonicalize_name(name): version
        for name, version in _PIN.findall((ROOT / "requirements.lock").read_text())
    }
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement.name}=={pins[name]} is outside {requirement.specifier}"
        )


def test_the_dockerfile_installs_from_the_lock() -> None:
    """The image's dependencies come from the lock, the package without its own resolution."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-r requirements.lock" in dockerfile
    assert "--no-deps ." in dockerfile
    assert re.search(r"^FROM python:\d+\.\d+\.\d+-", dockerfile, re.MULTILINE)
