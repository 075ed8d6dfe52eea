"""The chat page in a real Chromium (Playwright, the system browser), on a real server."""

from __future__ import annotations

import pytest

from tests.realserver import RealServer
from tests.tcpproxy import cuttable_proxy
from tests.ui.browser import RECORD_STATES, Page
from tokenrelay.client import Client

pytestmark = pytest.mark.server


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
