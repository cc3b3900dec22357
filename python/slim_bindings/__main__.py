"""``python -m slim_bindings``: version and build info, or ``node`` to run an embedded node.

    python -m slim_bindings                      # version, build date, git SHA, profile
    python -m slim_bindings node --endpoint 127.0.0.1:46357

The node is this package's own (``Slim.run_server``), plaintext on loopback by default; it runs
until Ctrl-C or SIGTERM and prints one ``listening on <ip:port>`` line once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import slim_bindings


def _build_info() -> str:
    return f"slim-bindings {slim_bindings.__version__}\n{slim_bindings.get_build_info()}"


async def _run_node(endpoint: str, log_level: str | None) -> int:
    if log_level:
        slim_bindings.init_tracing({"log_level": log_level})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # The node routes for others; its own app identity is never presented to a peer.
    provider = slim_bindings.PyIdentityProvider.SharedSecret(identity="slim/node/embedded", shared_secret="embedded")
    verifier = slim_bindings.PyIdentityVerifier.SharedSecret(identity="slim/node/embedded", shared_secret="embedded")
    node = await slim_bindings.Slim.new(slim_bindings.PyName("slim", "node", "embedded"), provider, verifier)
    bound = await node.run_server_bound({"endpoint": endpoint, "tls": {"insecure": True}})
    print(f"slim_bindings {slim_bindings.__version__} node listening on {bound}", flush=True)
    await stop.wait()
    await node.stop_server(endpoint)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m slim_bindings", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_build_info())
    sub = parser.add_subparsers(dest="command")
    node = sub.add_parser("node", help="run an embedded SLIM node until Ctrl-C / SIGTERM")
    node.add_argument("--endpoint", default="127.0.0.1:46357", help="ip:port to listen on (port 0 = any free port)")
    node.add_argument("--log-level", default=None, help="trace, debug, info, warn or error (stderr)")
    args = parser.parse_args(argv)
    if args.command == "node":
        try:
            return asyncio.run(_run_node(args.endpoint, args.log_level))
        except slim_bindings.SlimError as e:
            print(f"python -m slim_bindings node: {e}", file=sys.stderr)
            return 1
    print(_build_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
