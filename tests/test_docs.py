"""The documentation hangs together: every relative link in the README and docs/ leads to a
file that exists (and to a heading that exists, when it names one), and the README links every
file in docs/."""

from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import unquote

import pytest
from pydantic import BaseModel

from tests.markdown_blocks import ROOT, code_blocks, heading_anchors, links
from tokenrelay.settings import Settings, parse_settings

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]


def _relative(target: str) -> bool:
    return ":" not in target.split("#")[0] and not target.startswith("//")


def _broken(page: Path, target: str) -> str | None:
    """What is wrong with a relative link, or None."""
    path, _, anchor = target.partition("#")
    file = (page.parent / unquote(path)).resolve() if path else page
    if not file.exists():
        return f"{target}: no such file"
    if anchor and file.suffix == ".md" and anchor not in heading_anchors(file.read_text()):
        return f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    targets = [t for t in links(page.read_text()) if _relative(t)]
    broken = [problem for t in targets if (problem := _broken(page, t)) is not None]
    assert broken == []


def test_the_readme_links_every_doc() -> None:
    linked = {
        (ROOT / target.partition("#")[0]).resolve()
        for target in links(README.read_text())
        if _relative(target) and target.partition("#")[0]
    }
    unlinked = [str(doc.relative_to(ROOT)) for doc in DOCS if doc.resolve() not in linked]
    assert unlinked == []


def test_the_link_checker_sees_links_and_headings() -> None:
    """Guards the checker itself: a link in prose counts, one in code does not; a heading's
    anchor keeps a code span's text."""
    text = "# The `sim` models\n\nSee [api](docs/api.md#errors).\n\n```\n[x](nowhere.md)\n```\n"
    assert links(text) == ["docs/api.md#errors"]
    assert heading_anchors(text) == {"the-sim-models"}


def test_the_configuration_reference_shows_every_setting_at_its_default() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    reference = next(b for b in code_blocks(text) if b.info == "toml")
    data = tomllib.loads(reference.body)
    data.pop("upstreams")  # examples, not defaults
    data.pop("aliases")
    assert parse_settings(data) == Settings()
    for name, section in Settings.model_fields.items():  # none is left out
        if isinstance(section.default, BaseModel) and name in data:
            assert set(data[name]) == set(type(section.default).model_fields), name
