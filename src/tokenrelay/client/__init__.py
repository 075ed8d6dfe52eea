"""Python clients for tokenrelay's native API: typed events, automatic resume, cancel.

from tokenrelay.client import Client, Token

with Client("http://127.0.0.1:8000") as client:
    for event in client.stream("Explain SSE", model="sim/default"):
        if isinstance(event, Token):
            print(event.text, end="", flush=True)
"""

from tokenrelay.client.aio import AsyncChatStream, AsyncClient
from tokenrelay.client.events import (
    Cancelled,
    Done,
    Error,
    JsonPartial,
    Start,
    Status,
    StreamEvent,
    Token,
)
from tokenrelay.client.protocol import Answer, Backoff, ConnectionLost, StreamFailed
from tokenrelay.client.sync import ChatStream, Client

__all__ = [
    "Answer",
    "AsyncChatStream",
    "AsyncClient",
    "Backoff",
    "Cancelled",
    "ChatStream",
    "Client",
    "ConnectionLost",
    "Done",
    "Error",
    "JsonPartial",
    "Start",
    "Status",
    "StreamEvent",
    "StreamFailed",
    "Token",
]
