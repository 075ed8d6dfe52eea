"""Who is calling: the API key of every request to `/api/` and `/v1/`, checked once, in the
dispatcher, before any route runs.

A key comes as the SDKs send it: `Authorization: Bearer …` (OpenAI) or `x-api-key: …`
(Anthropic); either works on every route. Keys are required as soon as one exists, or with
`[auth] required = true`. Until then every request is served as before, whatever key it
carries (SDKs insist on one: "unused" is common), and the stream id stays the capability.

The key found goes into the request's scope (`key_of`): its name owns the streams the
request starts (`StreamMeta.owner`), and another key's attach, resume or cancel answers 404,
as if the stream did not exist. A key is never logged; its name is, on the request line.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.types import Scope

from tokenrelay.auth.keys import ApiKey, KeyStore
from tokenrelay.errors import ModelNotAllowed, Unauthorized

_KEY = "tokenrelay.key"  # in the scope's state
_GUARDED = ("/api/", "/v1/")


def guarded(path: str) -> bool:
    return path.startswith(_GUARDED)


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


async def authenticate(scope: Scope, store: KeyStore, required: bool) -> ApiKey | None:
    """The caller's key, put in the scope; None when keys are not required. Unauthorized for
    a missing, wrong, revoked or expired key when they are."""
    if not (required or await store.any()):
        return None  # an open server: what SDKs send as a placeholder ("unused") is ignored
    secret = presented_secret(scope)
    if secret is None:
        raise Unauthorized()
    key = await store.find(secret)
    if key is None:
        raise Unauthorized()
    scope.setdefault("state", {})[_KEY] = key
    return key


def key_of(connection: HTTPConnection) -> ApiKey | None:
    key: ApiKey | None = connection.scope.get("state", {}).get(_KEY)
    return key


def owner_of(connection: HTTPConnection) -> str:
    """The name that owns what this request starts ("" without keys)."""
    key = key_of(connection)
    return key.name if key is not None else ""


def check_model(connection: HTTPConnection, model: str) -> None:
    key = key_of(connection)
    if key is not None and not key.allows(model):
        raise ModelNotAllowed()
