"""The browser tests' fixtures (defined in browser.py, with the page helper they use)."""

from tests.ui.browser import browser, page, server

__all__ = ["browser", "page", "server"]
