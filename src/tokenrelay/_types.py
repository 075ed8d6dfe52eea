"""Small shared vocabulary: aliases and literal types used across the package."""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

JSONObject: TypeAlias = dict[str, Any]

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]
DisconnectPolicy = Literal["cancel", "detach"]
Chunking = Literal["token", "word", "line"]
