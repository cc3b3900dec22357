"""What the worker scripts of the process tests share: one JSON event per stdout line, and names
given on the command line as `org/namespace/agent`."""

from __future__ import annotations

import json
import sys

from slim_bindings import PyName


def emit(event: str, **fields: object) -> None:
    """Writes one event line for the test that runs this worker (`PeerProcess.wait_event`)."""
    fields["event"] = event
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def split(text: str) -> PyName:
    """`org/ns/agent` as a PyName."""
    a, b, c = text.split("/")
    return PyName(a, b, c)
