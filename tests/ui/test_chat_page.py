"""The chat page in a real Chromium (Playwright, the system browser), on a real server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.realserver import RealServer
from tests.tcpproxy import cuttable_proxy
from tests.ui.browser import ANSWERS_DONE, RECORD_STATES, Page
from tokenrelay.client import Client, StreamedAnswer

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


# Records what each tool-call block showed, at every change of the page.
RECORD_CALLS = """() => {
  window.__calls = [];
  new MutationObserver(() => {
    for (const node of document.querySelectorAll('.tool-call')) {
      window.__calls.push([node.querySelector('.tool-name').textContent, node.dataset.state,
                           node.querySelector('.tool-arguments').textContent]);
    }
  }).observe(document.querySelector('#conversation'),
             {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def _streamed(server: RealServer, request: dict[str, Any]) -> StreamedAnswer:
    """The answer the page must show for the request it sent (the sim is deterministic)."""
    fields = {k: v for k, v in request.items() if k not in ("messages", "on_disconnect")}
    with Client(server.url) as client:
        stream = client.stream(messages=request["messages"], **fields)
        for _ in stream:
            pass
    return stream.answer


def _sent_bodies(page: Page, path: str) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    page.page.on(
        "request",
        lambda request: (
            bodies.append(request.post_data_json)
            if request.url.endswith(path) and request.method == "POST"
            else None
        ),
    )
    return bodies


def test_reasoning_and_tool_calls_stream_into_their_own_blocks(
    page: Page, server: RealServer
) -> None:
    sent = _sent_bodies(page, "/api/chat/stream")
    page.page.evaluate(RECORD_CALLS)
    page.page.check("#demo-tools")
    page.ask("What is the weather in Paris?", "sim/think+tools")
    # The first answer calls both demo tools; the page answers them and the model goes on.
    page.page.wait_for_function(ANSWERS_DONE, arg=2, timeout=30_000)
    page.screenshot("tools")
    expected = _streamed(server, sent[0])
    first, second = page.page.locator(".message.assistant").all()

    reasoning = first.locator("details.reasoning")
    assert reasoning.get_attribute("open") is None  # collapsed by default
    assert reasoning.is_visible()
    assert first.locator(".reasoning-text").is_hidden()
    assert first.locator(".reasoning-text").text_content() == expected.reasoning[0].content
    assert first.locator(".reasoning-text *").count() == 0  # text, never markup
    reasoning.locator("summary").click()
    assert first.locator(".reasoning-text").is_visible()
    box, answer = reasoning.bounding_box(), first.locator(".answer").bounding_box()
    assert box is not None
    assert answer is not None
    assert box["y"] + box["height"] <= answer["y"]  # above the answer

    calls = first.locator(".tool-call")
    assert calls.locator(".tool-name").all_text_contents() == ["get_weather", "get_time"]
    assert calls.locator(".tool-arguments").all_text_contents() == [
        json.dumps(call.arguments, indent=2, ensure_ascii=False) for call in expected.tool_calls
    ]
    assert [calls.nth(i).get_attribute("data-state") for i in range(2)] == ["ended", "ended"]
    assert calls.locator(".tool-arguments *").count() == 0
    assert all(
        r.startswith("Demo result: ") for r in calls.locator(".tool-result").all_text_contents()
    )
    # While a call streamed, its block showed the arguments so far.
    seen = page.page.evaluate("window.__calls")
    raw = {call.name: call.arguments_text for call in expected.tool_calls}
    partial = [args for name, state, args in seen if state == "streaming" and args]
    assert partial
    assert all(any(text.startswith(args) for text in raw.values()) for args in partial)

    assert [m["role"] for m in sent[1]["messages"]] == ["user", "assistant", "tool", "tool"]
    assert sent[1]["messages"][1] == expected.message()  # the page's fold is the client's
    assert "The tool returned" in (second.locator(".answer").text_content() or "")


def test_without_streaming_calls_and_reasoning_still_show(page: Page, server: RealServer) -> None:
    page.page.goto(f"{server.url}/?nostream")
    page.page.wait_for_selector("#model option", state="attached")
    sent = _sent_bodies(page, "/api/chat")
    page.page.check("#demo-tools")
    page.ask("What time is it in Oslo?", "sim/fast+think+tools")
    page.page.wait_for_function(ANSWERS_DONE, arg=2, timeout=30_000)
    expected = _streamed(server, sent[0])
    first = page.page.locator(".message.assistant").first
    assert first.locator(".reasoning-text").text_content() == expected.reasoning[0].content
    assert first.locator(".tool-arguments").all_text_contents() == [
        json.dumps(call.arguments, indent=2, ensure_ascii=False) for call in expected.tool_calls
    ]
    assert sent[1]["messages"][1] == expected.message()
