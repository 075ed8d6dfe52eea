"""Who is calling: the API key of every request to `/api/` and `/v1/`, checked once, in the
dispatcher, before any route runs.

A key comes as the SDKs send it: `Authorization: Bearer …` (OpenAI) or `x-api-key: …`
(Anthropic); either works on every route. EventSource, which sends no headers, carries a
short-lived stream token in the query instead (`?token=`, `auth/tokens.py`), on the two GET
routes that start or read a stream. Keys are required as soon as one exists, or with
`[auth] required = true`. Until then every request is served as before, whatever key it
carries (SDKs insist on one: "unused" is common), and the stream id stays the capability.

The key found goes into the request's scope (`key_of`): its name owns the streams the
request starts (`StreamMeta.owner`), and another key's attach, resume or cancel answers 404,
as if the stream did not exist. A key is never logged; its name is, on the request line.
"""

from __future__ import annotations

import time
import urllib.parse

from starlette.requests import HTTPConnection
from starlette.types import Scope

from tokenrelay.auth.keys import ApiKey, KeyStore
from tokenrelay.auth.tokens import StreamTokens
from tokenrelay.errors import ModelNotAllowed, Unauthorized
from tokenrelay.metrics import METRICS
from tokenrelay.server.middleware import KEY_NOTE

_KEY = KEY_NOTE  # in the scope's state
_GUARDED = ("/api/", "/v1/")
_TOKEN_PATHS = ("/api/chat/stream", "/api/streams/")
EXPOSED_HEADERS = ("x-stream-id", "x-request-id")  # what CORS lets a page read (app.py too)


def guarded(scope: Scope) -> bool:
    """Whether this request needs a key: a route under /api/ or /v1/, as the router will
    match it (mounted under a `root_path`, without the prefix), and not a CORS preflight,
    which carries no credentials by design and does nothing but ask."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    if scope["method"] == "OPTIONS" and any(
        name == b"access-control-request-method" for name, _ in scope["headers"]
    ):
        return False
    return path.startswith(_GUARDED)


def cors_headers(scope: Scope, allowed_origins: tuple[str, ...]) -> dict[str, str]:
    """What CORSMiddleware would add to a simple response: a refusal written before the
    middleware runs must still be readable by a page of an allowed origin (to ask for a key)."""
    origin = next((v.decode("latin-1") for n, v in scope["headers"] if n == b"origin"), None)
    if origin is None or not (origin in allowed_origins or "*" in allowed_origins):
        return {}
    return {
        "access-control-allow-origin": origin,
        "access-control-expose-headers": ", ".join(EXPOSED_HEADERS),
        "vary": "Origin",
    }


def presented_secret(scope: Scope) -> str | None:
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
        elif name == b"x-api-key" and value:
            return value.decode("latin-1").strip()
    return None


def presented_token(scope: Scope) -> str | None:
    """A stream token in the query, where EventSource can carry one: the GET routes that
    start or read a stream."""
    if scope["method"] != "GET" or not scope["path"].startswith(_TOKEN_PATHS):
        return None
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    values = query.get("token")
    return values[0] if values else None


async def authenticate(
    scope: Scope, store: KeyStore, tokens: StreamTokens, required: bool
) -> ApiKey | None:
    """The caller's key, put in the scope; None when keys are not required. Unauthorized for
    a missing, wrong, revoked or expired key when they are."""
    if not (required or await store.any()):
        return None  # an open server: what SDKs send as a placeholder ("unused") is ignored
    secret = presented_secret(scope)
    if secret is not None:
        key = await store.find(secret)
    elif (token := presented_token(scope)) is not None:
        key = await _key_of_token(token, store, tokens)
    else:
        raise Unauthorized()
    if key is None:
        raise Unauthorized()
    scope.setdefault("state", {})[_KEY] = key
    METRICS.key_requests[key.name] = METRICS.key_requests.get(key.name, 0) + 1
    return key


async def _key_of_token(token: str, store: KeyStore, tokens: StreamTokens) -> ApiKey | None:
    digest = await tokens.key_digest(token)
    if digest is None:
        return None
    key = await store.by_digest(digest)  # a revoked key's tokens die with it
    return None if key is None or key.expired(time.time()) else key


def key_of(connection: HTTPConnection) -> ApiKey | None:
    key: ApiKey | None = connection.scope.get("state", {}).get(_KEY)
    return key


def owner_of(connection: HTTPConnection) -> str:
    """The name that owns what this request starts ("" without keys)."""
    key = key_of(connection)
    return key.name if key is not None else ""


def visible_models(connection: HTTPConnection, models: list[str]) -> list[str]:
    """The models the caller's key may use, of `models` (all of them without a key)."""
    key = key_of(connection)
    return models if key is None else [name for name in models if key.allows(name)]


def check_model(connection: HTTPConnection, model: str) -> None:
    key = key_of(connection)
    if key is not None and not key.allows(model):
        raise ModelNotAllowed()
