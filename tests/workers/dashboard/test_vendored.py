"""The dashboard's charting library, vendored: uPlot 1.6.32's built file, stylesheet and licence exactly as the npm
registry's tarball holds them (``npm pack uplot@1.6.32``), its version and the tarball's integrity written beside
them, and shipped with the package. A file changed by hand, or a new version dropped in without its record, fails."""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
VENDOR = ROOT / "workers" / "dashboard" / "static" / "vendor" / "uplot"

VERSION = "1.6.32"
# The npm tarball's own checks, as `npm pack` and the registry report them.
INTEGRITY = "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
SHASUM = "c800a63b432bad692d6d746f44f0882aa73a49ae"
# Each file's SHA-256, taken from the extracted tarball (dist/uPlot.iife.min.js, dist/uPlot.min.css, LICENSE).
SHA256 = {
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
}


@pytest.mark.parametrize("name", sorted(SHA256))
def test_each_vendored_file_is_the_registrys(name: str) -> None:
    digest = hashlib.sha256((VENDOR / name).read_bytes()).hexdigest()
    assert digest == SHA256[name], f"{name} is not uPlot {VERSION}'s: vendor it again from `npm pack uplot@{VERSION}`"


def test_nothing_else_is_vendored() -> None:
    assert sorted(path.name for path in VENDOR.iterdir()) == sorted([*SHA256, "VERSION"])


def test_the_version_file_names_the_release_its_tarball_and_its_licence() -> None:
    fields = dict(
        line.split(": ", 1) for line in (VENDOR / "VERSION").read_text().splitlines() if line and ": " in line
    )
    assert fields["name"] == "uplot"
    assert fields["version"] == VERSION
    assert fields["integrity"] == INTEGRITY
    assert fields["shasum"] == SHASUM
    assert fields["license"] == "MIT"


def test_the_built_file_and_the_licence_are_of_that_version() -> None:
    script = (VENDOR / "uPlot.iife.min.js").read_text()
    assert script.startswith(f"/*! https://github.com/leeoniya/uPlot (v{VERSION}) */")
    assert (VENDOR / "LICENSE").read_text().startswith("The MIT License (MIT)")


def test_the_package_ships_the_static_files() -> None:
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "dashboard/static/**/*" in package_data["workers"]


def test_the_page_loads_the_vendored_files_and_nothing_from_elsewhere() -> None:
    page = (ROOT / "workers" / "dashboard" / "static" / "index.html").read_text()
    assert '<script src="/static/vendor/uplot/uPlot.iife.min.js" defer></script>' in page
    assert '<link rel="stylesheet" href="/static/vendor/uplot/uPlot.min.css">' in page
    # Every address it names is the dashboard's own: no scheme, no other host.
    for address in re.findall(r'(?:src|href)="([^"]*)"', page):
        assert address.startswith("/"), address
        assert not address.startswith("//"), address
    # No inline script or style: the Content-Security-Policy (default-src 'self') would block them.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
    assert "<style" not in page
    assert " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)
