"""What every browser test shares: a real server, the system Chromium, and a watched page.

Screenshots go to test-artifacts/ (or $TOKENRELAY_ARTIFACTS) for a person to look at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realserver import RealServer, real_server
from tests.services import require_binary

playwright_api = pytest.importorskip("playwright.sync_api")

ARTIFACTS = Path(os.environ.get("TOKENRELAY_ARTIFACTS", "test-artifacts"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # this machine refuses Chromium's own background calls
    "--disable-component-update",
    "--disable-sync",
]
# Records every state an answer passes through (the page shows only the current one).
RECORD_STATES = """() => {
  window.__states = [];
  new MutationObserver((changes) => {
    for (const c of changes) {
      if (c.attributeName === "data-state") window.__states.push(c.target.dataset.state);
    }
  }).observe(document.querySelector("#conversation"), {attributes: true, subtree: true});
}"""
ADD_MODEL = """(model) => {
  const picker = document.querySelector('#model');
  if (![...picker.options].some(o => o.value === model)) picker.add(new Option(model, model));
}"""
ANSWER_LONGER_THAN = (
    "(n) => document.querySelector('.message.assistant .answer')?.textContent.length > n"
)
ANSWERS_DONE = (
    "(n) => document.querySelectorAll('.message.assistant[data-state=done]').length === n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    config = "[sim]\nttft = 0.05\ntokens_per_second = 80.0\n"
    with real_server(tmp_path_factory.mktemp("ui"), config) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    executable = require_binary("chromium", "chromium")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


class Page:
    """A page plus what its console said; a test fails on any console error."""

    def __init__(
        self,
        browser: object,
        url: str,
        name: str,
        *,
        strict_csp: bool = False,
        width: int = 1100,
        height: int = 900,
        color_scheme: str = "light",
    ) -> None:
        # Playwright's string predicates are evaluated as script, which the page's CSP forbids;
        # the tests bypass it, except the one that checks the page works under it.
        self.context = browser.new_context(  # type: ignore[attr-defined]
            viewport={"width": width, "height": height},
            color_scheme=color_scheme,
            bypass_csp=not strict_csp,
        )
        self.page = self.context.new_page()
        self.name = name
        self.problems: list[str] = []
        self.external: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("request", self._request)
        self.origin = url
        self.page.goto(f"{url}/")
        self.page.wait_for_selector("#model option", state="attached")

    def _console(self, message: object) -> None:
        if message.type == "error":  # type: ignore[attr-defined]
            self.problems.append(f"console: {message.text}")  # type: ignore[attr-defined]

    def _request(self, request: object) -> None:
        url: str = request.url  # type: ignore[attr-defined]
        if not url.startswith(self.origin) and not url.startswith("data:"):
            self.external.append(url)

    def ask(self, text: str, model: str) -> None:
        # The picker lists single models; a test's composite (sim/fast+hostile) is added to it.
        self.page.evaluate(ADD_MODEL, model)
        self.page.select_option("#model", model)
        self.page.fill("#prompt", text)
        self.page.press("#prompt", "Enter")

    def answer_html(self) -> str:
        html: str = self.page.inner_html(".message.assistant:last-of-type .answer")
        return html

    def rendered(self, markdown: str, *, live: bool = False) -> str:
        """What the page shows for `markdown`: complete, or (`live`) as a stream's text so far."""
        html: str = self.page.evaluate(
            "async ([text, live]) => (await import('/static/markdown.js'))"
            ".renderMarkdown(text, {live})",
            [markdown, live],
        )
        return html

    def screenshot(self, label: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.name}-{label}.png"))

    def close(self) -> None:
        self.screenshot("end")
        self.context.close()
        assert self.problems == []
        assert self.external == []  # nothing loaded from anywhere but tokenrelay


@pytest.fixture
def page(browser: object, server: RealServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    opened = Page(browser, server.url, request.node.name)
    yield opened
    opened.close()
