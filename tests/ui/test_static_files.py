"""The page's files go out in the package, and each vendored file says where it came from."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "tokenrelay"
STATIC = PACKAGE / "static"
PYPROJECT = ROOT / "pyproject.toml"


def test_every_static_file_is_in_the_package_data() -> None:
    # setuptools reads these patterns as globs relative to the package (`*` stops at a `/`).
    patterns = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    shipped = {path for pattern in patterns["tokenrelay"] for path in PACKAGE.glob(pattern)}
    files = {path for path in STATIC.rglob("*") if path.is_file()}
    assert files
    assert files - shipped == set()


def test_each_vendored_file_names_its_package_version_and_licence() -> None:
    readme = (STATIC / "vendor" / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| `")]
    listed = {row.split("`")[1] for row in rows}
    vendor = {path.name for path in (STATIC / "vendor").iterdir()}
    licences = {name for name in vendor if name.startswith("LICENSE-")}
    assert listed == vendor - licences - {"README.md"}
    for row in rows:
        named = set(re.findall(r"`(LICENSE-[^`]+)`", row))
        assert named
        assert named <= licences
