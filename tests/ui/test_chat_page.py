"""The chat page in a real Chromium (Playwright, the system browser), on a real server.

Screenshots go to test-artifacts/ (or $TOKENRELAY_ARTIFACTS) for a person to look at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realserver import RealServer, real_server
from tests.services import require_binary
from tests.tcpproxy import cuttable_proxy
from tokenrelay.client import Client

pytestmark = pytest.mark.server

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

    def __init__(self, browser: object, url: str, name: str, *, strict_csp: bool = False) -> None:
        # Playwright's string predicates are evaluated as script, which the page's CSP forbids;
        # the tests bypass it, except the one that checks the page works under it.
        self.context = browser.new_context(  # type: ignore[attr-defined]
            viewport={"width": 1100, "height": 900}, bypass_csp=not strict_csp
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

    def rendered(self, markdown: str) -> str:
        html: str = self.page.evaluate(
            "async (text) => (await import('/static/app.js')).renderMarkdown(text)", markdown
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


def _expected(server: RealServer, question: str, model: str) -> str:
    """The answer the page must show: the sim is deterministic for a conversation."""
    with Client(server.url) as client:
        messages = [{"role": "user", "content": question}]
        return client.complete(messages=messages, model=model).content


def test_an_answer_streams_in_with_stats(page: Page, server: RealServer) -> None:
    question = "Write a python function that retries"
    page.ask(question, "sim/default")
    answer = page.page.locator(".message.assistant .answer")
    page.page.wait_for_function(
        "document.querySelector('.message.assistant .answer')?.textContent.length > 20"
    )
    early = len(answer.text_content() or "")
    page.screenshot("streaming")
    page.page.wait_for_selector(".message.assistant[data-state=done]", timeout=30_000)
    assert len(answer.text_content() or "") > early  # it grew while we watched
    stats = page.page.inner_text(".message.assistant .stats")
    assert "first token" in stats
    assert "tok/s" in stats
    assert "tokens" in stats
    assert page.answer_html() == page.rendered(_expected(server, question, "sim/default"))
    assert page.page.locator(".message.assistant pre code").count() >= 1  # markdown, rendered
    assert page.page.get_attribute(".message.assistant .answer", "aria-live") == "polite"


def test_stop_cancels_on_the_server_and_keeps_the_partial_answer(
    page: Page, server: RealServer
) -> None:
    page.ask("Go on forever", "sim/default+endless")
    page.page.wait_for_function(
        "document.querySelector('.message.assistant .answer')?.textContent.length > 40"
    )
    server.wait_for("one stream running", lambda: server.health()["active_streams"] == 1)
    page.page.click("#stop")
    server.wait_for("the stream cancelled", lambda: server.health()["active_streams"] == 0)
    page.page.wait_for_selector(".message.assistant[data-state=stopped]")
    assert len(page.page.text_content(".message.assistant .answer") or "") > 40
    assert page.page.is_enabled("#send")
    assert page.page.is_enabled("#regenerate")


def test_a_dropped_connection_is_resumed_with_exact_text(
    browser: object, server: RealServer, request: pytest.FixtureRequest
) -> None:
    with cuttable_proxy(server.url) as proxy:
        page = Page(browser, proxy.url, request.node.name)
        page.page.evaluate(RECORD_STATES)
        question = "Explain how resumable streams work"
        page.ask(question, "sim/default")
        page.page.wait_for_function(
            "document.querySelector('.message.assistant .answer')?.textContent.length > 60"
        )
        proxy.cut()
        page.page.wait_for_selector(".message.assistant[data-state=done]", timeout=30_000)
        states = page.page.evaluate("window.__states")
        assert "reconnecting" in states
        assert page.answer_html() == page.rendered(_expected(server, question, "sim/default"))
        # The browser reports the reset itself; nothing else may show in the console.
        page.problems.remove("console: Failed to load resource: net::ERR_CONNECTION_RESET")
        page.close()


def test_model_output_cannot_run_script_or_load_anything(page: Page, server: RealServer) -> None:
    page.ask("Show me payloads", "sim/fast+hostile")
    page.page.wait_for_selector(".message.assistant[data-state=done]", timeout=30_000)
    answer = page.page.locator(".message.assistant .answer")
    assert page.page.evaluate("window.__hostile") is None  # no payload ran
    for tag in ("script", "img", "iframe", "svg", "style"):
        assert answer.locator(tag).count() == 0
    hrefs = answer.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    # javascript: and data: links lose their href (inert text); the raw anchor is gone.
    assert [href for href in hrefs if href is not None] == ["https://example.com/docs"]
    assert "<script>" in (answer.text_content() or "")  # shown as text, not dropped silently
    page.page.hover(".message.assistant .answer table")  # an onmouseover would fire now
    assert page.page.evaluate("window.__hostile") is None


def test_a_conversation_keeps_its_turns_and_regenerate_replaces_the_last_answer(
    page: Page, server: RealServer
) -> None:
    page.ask("First question about TCP", "sim/fast")
    page.page.wait_for_selector(".message.assistant[data-state=done]")
    page.page.fill("#prompt", "Second question about UDP")
    page.page.press("#prompt", "Shift+Enter")  # a new line, not a send
    assert page.page.locator(".message.user").count() == 1
    page.page.press("#prompt", "Enter")
    page.page.wait_for_function(
        "document.querySelectorAll('.message.assistant[data-state=done]').length === 2"
    )
    page.page.click("#regenerate")
    page.page.wait_for_function(
        "document.querySelectorAll('.message.assistant[data-state=done]').length === 2"
    )
    assert page.page.locator(".message.user").count() == 2
    assert page.page.locator(".message.assistant").count() == 2


def test_without_streaming_the_page_falls_back_to_one_request(
    page: Page, server: RealServer
) -> None:
    page.page.goto(f"{server.url}/?nostream")
    page.page.wait_for_selector("#model option", state="attached")
    question = "Explain fallbacks"
    page.ask(question, "sim/fast")
    page.page.wait_for_selector(".message.assistant[data-state=done]")
    assert page.answer_html() == page.rendered(_expected(server, question, "sim/fast"))


def test_the_page_works_under_its_own_content_security_policy(
    browser: object, server: RealServer, request: pytest.FixtureRequest
) -> None:
    strict = Page(browser, server.url, request.node.name, strict_csp=True)
    response = strict.page.goto(f"{server.url}/")
    assert response is not None
    assert "default-src 'self'" in response.headers["content-security-policy"]
    strict.page.wait_for_selector("#model option", state="attached")
    strict.page.fill("#prompt", "Explain policies")
    strict.page.press("#prompt", "Enter")
    strict.page.wait_for_selector(".message.assistant[data-state=done]", timeout=30_000)
    strict.close()  # no console errors: no inline script or style the policy had to block
