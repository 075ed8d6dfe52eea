"""The chat page on a server that needs API keys: it asks once, keeps the key for the tab, and
sends it with every request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realserver import RealServer, real_server
from tests.server.test_keys import create_key
from tests.ui.browser import ADD_MODEL

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealServer, str]]:
    tmp = tmp_path_factory.mktemp("ui-keys")
    config = f'[auth]\nkeys_file = "{tmp / "keys.json"}"\n[sim]\nttft = 0.0\n'
    with real_server(tmp, config) as running:
        yield running, create_key(tmp / "tokenrelay.toml", "page")


def test_the_page_asks_for_a_key_once_and_uses_it(
    browser: object, keyed: tuple[RealServer, str]
) -> None:
    server, key = keyed
    context = browser.new_context(bypass_csp=True)  # type: ignore[attr-defined]
    page = context.new_page()
    asked: list[str] = []

    def answer(dialog: object) -> None:
        asked.append(dialog.message)  # type: ignore[attr-defined]
        dialog.accept(key)  # type: ignore[attr-defined]

    page.on("dialog", answer)
    page.goto(f"{server.url}/")
    page.wait_for_selector("#model option", state="attached")  # the models came, with the key
    assert len(asked) == 1
    assert "API key" in asked[0]
    assert page.evaluate("sessionStorage.getItem('tokenrelay.key')") == key
    page.evaluate(ADD_MODEL, "sim/fast")
    page.select_option("#model", "sim/fast")
    page.fill("#prompt", "Explain TCP handshakes")
    page.press("#prompt", "Enter")
    page.wait_for_selector(".message.assistant[data-state=done]", timeout=30_000)
    assert len(asked) == 1  # kept for the tab: not asked again
    page.reload()
    page.wait_for_selector("#model option", state="attached")
    assert len(asked) == 1
    # EventSource cannot send the key: the client trades it for a stream token.
    ending = page.evaluate(
        """async () => {
          const client = await import('/static/tokenrelay.js');
          const url = await client.eventSourceUrl({ message: 'hi', model: 'sim/fast' });
          return await new Promise((resolve) => {
            const source = new EventSource(url);
            source.onmessage = (event) => {
              const payload = JSON.parse(event.data);
              if (payload.type === 'done') { source.close(); resolve(url.includes('token=trs_')); }
            };
            source.onerror = () => { source.close(); resolve('error'); };
          });
        }"""
    )
    assert ending is True
    context.close()
    assert key not in server.log()
