"""Python clients for tokenrelay's native API: typed events, automatic resume, cancel.

from tokenrelay.client import Client, Token

with Client("http://127.0.0.1:8000") as client:
    stream = client.stream("Explain SSE", model="sim/default")
    for event in stream:
        if isinstance(event, Token):
            print(event.text, end="", flush=True)
    stream.answer.tool_calls, stream.answer.reasoning  # the answer, assembled
"""

from tokenrelay.client.aio import AsyncChatStream, AsyncClient
from tokenrelay.client.events import (
    Cancelled,
    Done,
    Error,
    JsonPartial,
    Logprobs,
    Reasoning,
    Start,
    Status,
    StreamEvent,
    Token,
    ToolCall,
    Usage,
)
from tokenrelay.client.folding import AssembledCall, ReasoningBlock, StreamedAnswer
from tokenrelay.client.protocol import Answer, Backoff, ConnectionLost, StreamFailed
from tokenrelay.client.sync import ChatStream, Client

__all__ = [
    "Answer",
    "AssembledCall",
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
    "Logprobs",
    "Reasoning",
    "ReasoningBlock",
    "Start",
    "Status",
    "StreamEvent",
    "StreamFailed",
    "StreamedAnswer",
    "Token",
    "ToolCall",
    "Usage",
]
