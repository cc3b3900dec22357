"""How MCP messages travel in SLIM messages (docs/mcp.md has the whole picture).

One JSON-RPC message is one SLIM message: the UTF-8 JSON text as payload, ``payload_type``
``application/json``. A few transport messages share the session; their ``payload_type`` says what
they are and their payload is empty or a small JSON object:

==================  ==========================================================================
``slim-mcp/open``   client → server, first message: ``{"version": 1, "max_message_size": n}``
``slim-mcp/ready``  server → client, the answer: ``{"version": 1, "max_message_size": n}``
``slim-mcp/ping``   either way, when nothing else was sent for a while; ignored on receipt (its
                    SLIM acknowledgement is what proves the peer alive)
``slim-mcp/close``  either way: this end has closed the MCP connection
==================  ==========================================================================

Any other ``payload_type`` (a plain SLIM app sends ``msg``) is read as JSON-RPC, so a peer that
sends raw JSON still gets an answer.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from mcp import types
from pydantic import ValidationError

JSON: Final = "application/json"
OPEN: Final = "slim-mcp/open"
READY: Final = "slim-mcp/ready"
PING: Final = "slim-mcp/ping"
CLOSE: Final = "slim-mcp/close"
CONTROL: Final = frozenset({OPEN, READY, PING, CLOSE})
VERSION: Final = 1

DEFAULT_MAX_MESSAGE_SIZE: Final = 4 * 1024 * 1024 - 64 * 1024
"""Largest JSON-RPC message (bytes of UTF-8 JSON) either end sends or accepts by default, and the
most it may be set to: the largest payload a SLIM app may publish (4 MiB, what a node accepts, less
64 KiB for the SLIM and MLS headers and the identity token; a larger publish raises
``MessageTooLargeError``)."""

DEFAULT_TIMEOUT: Final = 30.0
"""Seconds the transport waits for the peer by default (see ``client``)."""

RELIABLE_RETRIES: Final = 5
"""Retransmissions of an unacknowledged SLIM message before the session reports it lost."""

_ID_IN_PREFIX = re.compile(rb'"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,256}")')
_ID_SCAN: Final = 4096


def session_timing(timeout: float) -> tuple[float, float]:
    """(seconds per SLIM retransmission, keepalive interval) for a liveness bound ``timeout``.

    A message goes unacknowledged for ``RELIABLE_RETRIES + 1`` tries (half of ``timeout``), and a
    keepalive goes out when nothing was sent for a fifth of it: a peer that vanished is noticed
    within ``timeout`` even when this end sends nothing of its own."""
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return timeout / (2 * (RELIABLE_RETRIES + 1)), timeout / 5


def hello(max_message_size: int) -> bytes:
    """The payload of ``open`` and ``ready``."""
    return json.dumps({"version": VERSION, "max_message_size": max_message_size}).encode()


def peer_limit(payload: bytes) -> int | None:
    """The ``max_message_size`` in a peer's ``open``/``ready`` (``None`` when absent or malformed)."""
    try:
        value = json.loads(payload).get("max_message_size")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None


def encode(message: types.JSONRPCMessage) -> bytes:
    """The wire form of one JSON-RPC message (the SDK's own serialisation, as stdio sends it)."""
    return message.model_dump_json(by_alias=True, exclude_unset=True).encode()


def too_large(size: int, limit: int, what: str) -> types.ErrorData:
    """The error for a message over the size limit."""
    return types.ErrorData(
        code=types.INVALID_REQUEST,
        message=f"{what} of {size} bytes exceeds the {limit}-byte limit of MCP over SLIM",
        data={"size": size, "limit": limit},
    )


def request_id_in_prefix(payload: bytes) -> types.RequestId | None:
    """The request id of an oversized message, read from its first bytes without parsing the
    rest (the SDK writes ``id`` before ``method`` and ``params``); ``None`` when not found."""
    m = _ID_IN_PREFIX.search(payload, 0, _ID_SCAN)
    if m is None:
        return None
    try:
        value = json.loads(m.group(1))
    except ValueError:
        return None
    return value if isinstance(value, (int, str)) else None


def decode(payload: bytes) -> types.JSONRPCMessage | tuple[types.RequestId | None, types.ErrorData]:
    """A JSON-RPC message, or what to answer instead: (the request id when one can be read, the
    error: ``PARSE_ERROR`` for bytes that are not UTF-8 JSON, ``INVALID_REQUEST`` for JSON that is
    not one JSON-RPC message, batches included — MCP has no batches since 2025-06-18)."""
    try:
        return types.jsonrpc_message_adapter.validate_json(payload, by_name=False)
    except ValidationError as e:
        if any(err.get("type") == "json_invalid" for err in e.errors()):
            return None, types.ErrorData(code=types.PARSE_ERROR, message="Parse error: not UTF-8 JSON")
    try:
        obj: Any = json.loads(payload)
    except ValueError:  # pragma: no cover - pydantic accepted it as JSON above
        obj = None
    if isinstance(obj, list):
        return None, types.ErrorData(
            code=types.INVALID_REQUEST,
            message="Invalid Request: JSON-RPC batches are not supported by MCP",
            data={"items": len(obj)},
        )
    rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        rid = None
    return rid, types.ErrorData(
        code=types.INVALID_REQUEST, message="Invalid Request: not a JSON-RPC 2.0 message"
    )


def error_message(rid: types.RequestId | None, error: types.ErrorData) -> types.JSONRPCError:
    """A JSON-RPC error response (``id`` null when the request's id is unknown)."""
    return types.JSONRPCError(jsonrpc="2.0", id=rid, error=error)
