"""How the chat page looks and handles, in a real Chromium on a real server (issue 13): narrow
and wide screens, dark mode, markdown at a stream's live end, errors with their request id,
stats without streaming, highlighted code with a copy button, and the keyboard.

Screenshots (light and dark, 390 and 1280 px) go where browser.py puts them, for a person."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from tests.realserver import RealServer
from tests.ui.browser import ANSWERS_DONE, Page

pytestmark = pytest.mark.server

# The sim puts the question's words in its answer: in a table cell (asked to compare) and in a
# code line (asked for code). One long word makes both wider than any screen.
WIDE_QUESTION = "Compare code for " + "streaming" * 14
DONE = ".message.assistant[data-state=done]"


@pytest.fixture
def open_page(
    browser: object, server: RealServer, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Page]]:
    """Opens pages with a given viewport and colour scheme; each is checked when closed."""
    opened: list[Page] = []

    def open_one(width: int = 1100, color_scheme: str = "light", path: str = "/") -> Page:
        name = f"{request.node.name}-{width}-{color_scheme}"
        page = Page(browser, server.url, name, width=width, color_scheme=color_scheme)
        if path != "/":
            page.page.goto(f"{server.url}{path}")
            page.page.wait_for_selector("#model option", state="attached")
        opened.append(page)
        return page

    yield open_one
    for page in opened:
        page.close()


SIZES = """() => {
  const doc = document.documentElement;
  const box = (selector) => {
    const node = document.querySelector(selector);
    return {scroll: node.scrollWidth, client: node.clientWidth};
  };
  return {page: {scroll: doc.scrollWidth, client: doc.clientWidth},
          table: box('.answer .table-scroll'), code: box('.answer .code-block pre')};
}"""


@pytest.mark.parametrize("width", [360, 390, 1280])
def test_wide_tables_and_code_scroll_in_their_own_box_not_the_page(
    open_page: Callable[..., Page], width: int
) -> None:
    page = open_page(width=width)
    page.ask(WIDE_QUESTION, "sim/fast")
    page.page.wait_for_selector(DONE)
    sizes = page.page.evaluate(SIZES)
    assert sizes["page"]["scroll"] <= sizes["page"]["client"]  # no sideways page scroll
    assert sizes["table"]["scroll"] > sizes["table"]["client"]  # the table is wider ...
    assert sizes["code"]["scroll"] > sizes["code"]["client"]  # ... and so is the code line
    new_chat = page.page.locator("#new-chat")
    box = new_chat.bounding_box()
    assert box is not None
    assert new_chat.is_visible()
    assert box["x"] >= 0  # on screen, not pushed off it
    assert box["x"] + box["width"] <= width
    page.screenshot("wide-answer")


def _luminance(css_color: str) -> float:
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_color)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


COLOURS = """() => {
  const colour = (selector, property) =>
    getComputedStyle(document.querySelector(selector))[property];
  return {page: colour('body', 'backgroundColor'), text: colour('body', 'color'),
          code: colour('.answer .code-block pre', 'backgroundColor'),
          keyword: colour('.answer .hljs-keyword', 'color')};
}"""


@pytest.mark.parametrize("width", [390, 1280])
def test_dark_mode_follows_the_system_setting(open_page: Callable[..., Page], width: int) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        page = open_page(width=width, color_scheme=scheme)
        page.ask("Write a python function that retries", "sim/fast")
        page.page.wait_for_selector(DONE)
        colours[scheme] = page.page.evaluate(COLOURS)
        page.screenshot("answer")
    light, dark = colours["light"], colours["dark"]
    assert _luminance(light["page"]) > 0.9
    assert _luminance(light["text"]) < 0.3
    assert _luminance(dark["page"]) < 0.15
    assert _luminance(dark["text"]) > 0.7
    assert _luminance(dark["code"]) < 0.15  # code blocks and their colours follow too
    assert dark["keyword"] != light["keyword"]


# Every state the answer shows while it streams: its text, and its bold runs.
RECORD_RENDERS = """() => {
  window.__renders = [];
  window.__busy = [];
  new MutationObserver((changes) => {
    for (const c of changes) {
      const answer = c.target.closest && c.target.closest('.answer');
      if (!answer) continue;
      if (c.type === 'attributes') window.__busy.push(answer.getAttribute('aria-busy'));
      else window.__renders.push([answer.textContent,
                             [...answer.querySelectorAll('strong')].map(s => s.textContent)]);
    }
  }).observe(document.querySelector('#conversation'),
             {subtree: true, childList: true, attributes: true, attributeFilter: ['aria-busy']});
}"""


def test_an_unclosed_bold_at_the_live_end_shows_as_bold(page: Page) -> None:
    # The rule, on the text as it stands between two tokens ...
    live = page.rendered("1. **Keep it obs", live=True)
    assert "<strong>Keep it obs</strong>" in live
    assert "*" not in page.rendered("1. **", live=True)  # nothing to embolden yet: held back
    assert "**" in page.rendered("1. **Keep it obs")  # once complete, the text is the text
    assert "**kw" in page.rendered("```python\nf(**kw", live=True)  # code is left alone
    # ... and on a real stream: no frame shows raw asterisks, and a bold run shows as it grows.
    page.page.evaluate(RECORD_RENDERS)
    page.ask("Explain how resumable streams work", "sim/default")
    page.page.wait_for_selector(DONE, timeout=30_000)
    renders = page.page.evaluate("window.__renders")
    final_bold = renders[-1][1]
    assert final_bold  # the sim's answer has bold list items
    assert not [text for text, _ in renders if "*" in text]
    growing = {b for _, bold in renders for b in bold if b not in final_bold}
    assert any(any(whole.startswith(part) for whole in final_bold) for part in growing)
    # While it streamed the answer was busy (read once complete), and is not any more.
    assert page.page.evaluate("window.__busy") == ["true", None]


FIRST_BLOCK = """() => {
  const answer = document.querySelector('.message.assistant .answer');
  const first = answer.firstElementChild;
  return {tag: first.tagName, text: first.textContent.trim(),
          margin: getComputedStyle(first).marginTop,
          gap: first.getBoundingClientRect().top - answer.getBoundingClientRect().top};
}"""


def test_an_answer_starts_with_its_text_not_an_empty_band(page: Page) -> None:
    page.ask("Explain fallbacks", "sim/fast")
    page.page.wait_for_selector(DONE)
    first = page.page.evaluate(FIRST_BLOCK)
    assert first["tag"] == "P"
    assert first["text"]
    assert first["margin"] == "0px"
    assert first["gap"] == 0


@pytest.mark.parametrize(
    "model",
    ["sim/fast+error-after-5", "sim/fast+error-after-0"],
    ids=["error event mid-stream", "error status before the first token"],
)
def test_an_error_shows_the_request_id_to_quote(page: Page, model: str) -> None:
    request_ids: list[str] = []
    page.page.on(
        "response",
        lambda response: (
            request_ids.append(response.headers["x-request-id"])
            if response.url.endswith("/api/chat/stream")
            else None
        ),
    )
    page.ask("Tell me about errors", model)
    page.page.wait_for_selector(".message.assistant[data-state=error]")
    problem = page.page.locator(".message.assistant .problem")
    assert problem.get_attribute("role") == "alert"
    assert problem.locator(".problem-message").text_content() == (
        "The model provider returned an error."
    )
    shown = problem.locator(".request-id")
    assert shown.is_visible()
    assert re.fullmatch(r"request id req_[0-9a-f]{16}", shown.inner_text())
    assert request_ids == [shown.locator("code").text_content()]  # the server's own id
    page.screenshot("error")
    # The browser reports an error status itself; nothing else may show in the console.
    refused = "console: Failed to load resource: the server responded with a status of 502"
    page.problems = [p for p in page.problems if not p.startswith(refused)]


def test_without_streaming_the_stats_show_tokens_per_second(page: Page, server: RealServer) -> None:
    page.page.goto(f"{server.url}/?nostream")
    page.page.wait_for_selector("#model option", state="attached")
    page.ask("Explain fallbacks", "sim/default")
    page.page.wait_for_selector(DONE, timeout=30_000)
    rate = page.page.text_content(".message.assistant .stats .rate") or ""
    match = re.fullmatch(r"(\d+(?:\.\d+)?) tok/s", rate)
    assert match, rate
    assert float(match[1]) > 0


FOCUSED = """() => {
  const node = document.activeElement;
  return {cls: node.className, outline: getComputedStyle(node).outlineStyle,
          label: node.getAttribute('aria-label')};
}"""


def test_code_is_highlighted_and_copied_from_the_keyboard(page: Page) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.ask("Write a python function that retries", "sim/fast")
    page.page.wait_for_selector(DONE)
    block = page.page.locator(".answer .code-block")
    assert block.locator("pre code.hljs.language-python").count() == 1
    assert block.locator("span.hljs-keyword").count() >= 3  # def, for, if, return ...
    assert block.locator(".code-language").text_content() == "python"
    # From the message box, backwards: the copy button is the last control of the answer.
    page.page.focus("#prompt")
    for _ in range(5):
        page.page.keyboard.press("Shift+Tab")
        if "copy-code" in page.page.evaluate(FOCUSED)["cls"]:
            break
    focused = page.page.evaluate(FOCUSED)
    assert focused["cls"] == "copy-code"
    assert focused["outline"] != "none"  # the focus can be seen
    assert focused["label"] == "Copy python code"
    page.page.keyboard.press("Enter")
    page.page.wait_for_function("document.querySelector('#announcer').textContent === 'Copied'")
    copied = page.page.evaluate("navigator.clipboard.readText()")
    code = block.locator("pre code").text_content() or ""
    assert copied == code.rstrip("\n")
    assert copied.startswith("def ")


def test_every_button_has_a_name_and_esc_stops_an_answer(page: Page, server: RealServer) -> None:
    page.ask("Go on forever", "sim/default+endless")
    page.page.wait_for_function(
        "document.querySelector('.message.assistant .answer')?.textContent.length > 40"
    )
    names = page.page.locator("button:visible").evaluate_all(
        "buttons => buttons.map(b => (b.getAttribute('aria-label') || b.textContent).trim())"
    )
    assert names
    assert all(names)
    page.page.keyboard.press("Escape")
    page.page.wait_for_selector(".message.assistant[data-state=stopped]")
    server.wait_for("the stream cancelled", lambda: server.health()["active_streams"] == 0)


def test_a_suggestion_asks_its_question(page: Page) -> None:
    suggestion = page.page.locator(".suggestion").first
    question = suggestion.text_content()
    suggestion.focus()
    page.page.keyboard.press("Enter")
    page.page.wait_for_function(ANSWERS_DONE, arg=1, timeout=30_000)
    assert page.page.text_content(".message.user") == question
    assert page.page.locator(".welcome").is_hidden()
    page.page.click("#new-chat")
    assert page.page.locator(".welcome").is_visible()
    assert page.page.evaluate("document.activeElement.id") == "prompt"


def test_a_focused_copy_button_keeps_the_focus_while_the_answer_streams(page: Page) -> None:
    page.ask("Write a python function that retries", "sim/default")
    page.page.wait_for_selector(".answer .copy-code")
    page.page.focus("#prompt")
    page.page.keyboard.press("Shift+Tab")
    assert page.page.evaluate(FOCUSED)["cls"] == "copy-code"
    length = len(page.page.text_content(".message.assistant .answer") or "")
    page.page.wait_for_selector(DONE, timeout=30_000)
    assert len(page.page.text_content(".message.assistant .answer") or "") > length  # re-rendered
    assert page.page.evaluate(FOCUSED)["cls"] == "copy-code"  # and the focus stayed there
