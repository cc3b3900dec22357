"""What the worker scripts of the process tests share: one JSON event per stdout line, names
given on the command line as `org/namespace/agent`, and an app with a shared-secret identity
connected to the test's node."""

from __future__ import annotations

import json
import os
import sys

import slim_bindings
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


async def new_app(local: str, endpoint: str, secret: str) -> slim_bindings.Slim:
    """An app named `local` with a shared-secret identity, connected to the node at `endpoint`."""
    # WORKER_LOG=debug (or info, trace...) logs what the runtime does, on stderr (HTTP/2 frames left out).
    if os.environ.get("WORKER_LOG"):
        slim_bindings.init_tracing({"log_level": os.environ["WORKER_LOG"], "filter": "h2=info,hyper=info"})
    provider = slim_bindings.PyIdentityProvider.SharedSecret(identity=local, shared_secret=secret)
    verifier = slim_bindings.PyIdentityVerifier.SharedSecret(identity=local, shared_secret=secret)
    app = await slim_bindings.Slim.new(split(local), provider, verifier)
    await app.connect({"endpoint": endpoint, "tls": {"insecure": True}})
    return app
