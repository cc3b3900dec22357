"""A standalone SLIM node for the examples: ``python slim.py --slim 127.0.0.1:46357``.

``--slim`` (or ``SLIM_SLIM``) is the address to serve on, ``host:port`` (plaintext, loopback by
default), or a server configuration as JSON, the same dictionary ``Slim.run_server`` takes, e.g.
``{"endpoint": "127.0.0.1:46357", "tls": {"cert_file": "...", "key_file": "..."}}``. Prints
``listening on <ip:port>`` once it accepts connections; Ctrl-C or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from typing import Any

import click
from common import format_message_print, shared_secret_identity

import slim_bindings

DEFAULT_ENDPOINT = "127.0.0.1:46357"


def server_config(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, Any]:
    """Click callback: ``host:port`` (plaintext) or a JSON server configuration."""
    text = value.strip()
    if not text.startswith("{"):
        return {"endpoint": text, "tls": {"insecure": True}}
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        raise click.BadParameter(f"{value} is neither host:port nor valid JSON", ctx, param) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("endpoint"), str):
        raise click.BadParameter(f"{value} is not a JSON object with an `endpoint`", ctx, param)
    return parsed


async def run_server(config: dict[str, Any], enable_opentelemetry: bool) -> None:
    """Runs a node serving with ``config`` until SIGINT/SIGTERM."""
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

    bound = await server.run_server_bound(config)
    format_message_print("slim node", f"listening on {bound}")

    await stop.wait()
    print("\nShutting down...", flush=True)
    await server.stop_server(config["endpoint"])


@click.command(context_settings={"auto_envvar_prefix": "SLIM"})
@click.option(
    "-s",
    "--slim",
    default=DEFAULT_ENDPOINT,
    metavar="HOST:PORT|JSON",
    callback=server_config,
    help="Where to serve: host:port (plaintext) or a server configuration as JSON",
)
@click.option("-t", "--enable-opentelemetry", is_flag=True, help="Export traces to OpenTelemetry")
def main(slim: dict[str, Any], enable_opentelemetry: bool) -> None:
    """Run a SLIM node (every option can also be set as SLIM_<OPTION>, e.g. SLIM_SLIM)."""
    try:
        asyncio.run(run_server(slim, enable_opentelemetry))
    except KeyboardInterrupt:
        print("Program terminated by user.")
    except slim_bindings.SlimError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
