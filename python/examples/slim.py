"""A standalone SLIM node for the examples: ``python slim.py --slim 127.0.0.1:46357``.

Prints one line once it is listening; Ctrl-C or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import slim_bindings
from common import format_message_print, shared_secret_identity


async def run_server(address: str, enable_opentelemetry: bool) -> None:
    """Runs a node serving on ``address`` until SIGINT/SIGTERM."""
    slim_bindings.init_tracing(
        {
            "log_level": "info",
            "opentelemetry": {
                "enabled": enable_opentelemetry,
                "grpc": {"endpoint": "http://localhost:4317"},
            },
        }
    )
    provider, verifier = shared_secret_identity(identity="slim", secret="secret")
    server = await slim_bindings.Slim.new(
        slim_bindings.PyName("cisco", "default", "slim"), provider, verifier
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    bound = await server.run_server_bound({"endpoint": address, "tls": {"insecure": True}})
    format_message_print("slim node", f"listening on {bound}")

    await stop.wait()
    print("\nShutting down...", flush=True)
    await server.stop_server(address)


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description="Run a SLIM node.")
    parser.add_argument("-s", "--slim", default="127.0.0.1:46357", help="Endpoint to serve on (host:port)")
    parser.add_argument("-t", "--enable-opentelemetry", action="store_true", help="Export traces to OpenTelemetry")
    args = parser.parse_args()
    try:
        asyncio.run(run_server(args.slim, args.enable_opentelemetry))
    except KeyboardInterrupt:
        print("Program terminated by user.")
    except slim_bindings.SlimError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
