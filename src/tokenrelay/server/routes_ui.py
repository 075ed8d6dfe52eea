"""The chat page (`GET /`) and its static files (`/static/...`): shipped in the package,
served as they are, no build step and nothing fetched from elsewhere."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"

# The page's own policy: scripts, styles and requests only from this origin, no plugins, no
# frames. A second line of defence behind the sanitizer for what a model writes.
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


async def chat_page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


ROUTES: list[BaseRoute] = [
    Route("/", chat_page, methods=["GET"]),
    Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
]
