"""Who may start a paid generation with a GET.

`GET /api/chat/stream?message=…` exists for EventSource, which cannot POST. A GET is also what
any other site can make a browser send (a link, an image, its own EventSource), with no CORS
preflight to stop it. So a GET that would start a generation is refused (403 `cross_site`)
when the browser says it came from elsewhere: `Sec-Fetch-Site` other than `same-origin` or
`none` (typed into the address bar), or, from a browser too old to send that, an `Origin`
other than this server's (by host). An origin in `cors_origins` is always let in. Such an
older browser sends no `Origin` with an image or a link, so for it this is a partial guard;
every current browser sends `Sec-Fetch-Site`. A request with
neither header (curl, scripts, SDKs) is no browser acting for another site, and is served.
A POST needs no such check: its JSON body makes a browser ask first (preflight), and CORS
answers that. Resuming (`Last-Event-ID`) starts nothing and is never refused.
"""

from __future__ import annotations

from starlette.requests import Request

from tokenrelay.errors import CrossSiteStart

_OWN_SITE = frozenset({"same-origin", "none"})


def refuse_cross_site_start(request: Request, allowed_origins: tuple[str, ...]) -> None:
    origin = request.headers.get("origin")
    if origin is not None and (origin in allowed_origins or "*" in allowed_origins):
        return  # an origin the operator let in (CORS), whatever Sec-Fetch-Site says
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:  # set by the browser itself, and right behind a proxy too
        if fetch_site not in _OWN_SITE:
            raise CrossSiteStart()
    elif origin is not None and _host_of(origin) != request.headers.get("host", ""):
        raise CrossSiteStart()  # an older browser; by host alone, as behind a TLS proxy the
        # scheme seen here (http) is not the page's (https)


def _host_of(origin: str) -> str:
    return origin.partition("://")[2]
