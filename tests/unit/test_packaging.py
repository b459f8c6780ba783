"""The package installs where its dependencies have wheels: decord only on the platforms it is built for."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
# The marker environments pip reports on each platform (sys_platform, platform_machine).
PLATFORMS = {
    "linux-x86_64": ("linux", "x86_64"),
    "windows-amd64": ("win32", "AMD64"),
    "linux-aarch64": ("linux", "aarch64"),
    "macos-arm64": ("darwin", "arm64"),
    "macos-x86_64": ("darwin", "x86_64"),
    "windows-arm64": ("win32", "ARM64"),
}
# decord 0.6 publishes manylinux x86_64 and win_amd64 wheels and no source distribution.
WITH_DECORD = {"linux-x86_64", "windows-amd64"}


def requirement(name: str) -> Requirement:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    matches = [r for r in map(Requirement, dependencies) if r.name == name]
    assert len(matches) == 1, f"{name} must be listed once in [project].dependencies"
    return matches[0]


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_decord_is_required_only_where_it_has_wheels(platform):
    sys_platform, machine = PLATFORMS[platform]
    decord = requirement("decord")
    assert decord.marker is not None
    wanted = decord.marker.evaluate({"sys_platform": sys_platform, "platform_machine": machine})
    assert wanted == (platform in WITH_DECORD)


def test_pyav_is_required_everywhere():
    """PyAV is the reader decord falls back to, so it must install on every platform."""
    assert requirement("av").marker is None
