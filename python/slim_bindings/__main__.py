"""``python -m slim_bindings``: version and build info, ``node`` to run a node, ``node-info`` to
ask a node what it knows.

    python -m slim_bindings                                   # version, build date, git SHA, profile
    python -m slim_bindings node --endpoint 127.0.0.1:46357   # one plaintext node
    python -m slim_bindings node --config node.yaml           # the `slim` binary's YAML (servers,
                                                              # clients, TLS, auth, logging, metrics)
    python -m slim_bindings node-info --endpoint http://127.0.0.1:46357   # links, routes, mesh

The node is the same router as the standalone ``slim`` binary: it links to the nodes in its
``clients:`` and routes for them (docs/mesh.md). It runs until Ctrl-C or SIGTERM and prints one
``listening on <ip:port>`` line per server once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import slim_bindings
from slim_bindings.node import format_node_info, node_info, start_node, stop_node


def _build_info() -> str:
    return f"slim-bindings {slim_bindings.__version__}\n{slim_bindings.get_build_info()}"


async def _run_node(
    config: str | None, endpoint: str | None, metrics: str | None, log_level: str | None
) -> int:
    if log_level:
        slim_bindings.init_tracing({"log_level": log_level})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    yaml_text = None
    if config is not None:
        yaml_text = await asyncio.to_thread(Path(config).read_text, encoding="utf-8")
    runner = await start_node(
        config_yaml=yaml_text, endpoint=None if yaml_text else endpoint, metrics=metrics
    )
    for addr in runner.listening:
        print(f"slim_bindings {slim_bindings.__version__} node listening on {addr}", flush=True)
    if runner.metrics_endpoint:
        print(f"serving metrics at http://{runner.metrics_endpoint}/metrics", flush=True)
    await stop.wait()
    await stop_node(runner)
    return 0


async def _node_info(args: argparse.Namespace) -> int:
    client: dict | str = json.loads(args.client) if args.client else args.endpoint
    info = await node_info(client, max_routes=args.max_routes, name_filter=args.filter)
    print(json.dumps(info, indent=2) if args.json else format_node_info(info))
    return 0


DESCRIPTION = "Without a command: version and build info. `node` runs a SLIM node, `node-info` asks a node what it knows."


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m slim_bindings", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=_build_info())
    sub = parser.add_subparsers(dest="command")
    node = sub.add_parser("node", help="run a SLIM node until Ctrl-C / SIGTERM")
    node.add_argument(
        "--config", default=None, help="YAML configuration (the same file as the slim binary's)"
    )
    node.add_argument(
        "--endpoint",
        default="127.0.0.1:46357",
        help="ip:port to listen on without --config (port 0 = any free port)",
    )
    node.add_argument("--metrics", default=None, help="serve Prometheus counters on http://<ip:port>/metrics")
    node.add_argument("--log-level", default=None, help="trace, debug, info, warn or error (stderr)")
    info = sub.add_parser("node-info", help="what a node knows: links, routes, mesh nodes, counters")
    info.add_argument("--endpoint", default="http://127.0.0.1:46357", help="the node's URL (plaintext)")
    info.add_argument(
        "--client", default=None, help="a client dict as JSON (endpoint, tls, auth), instead of --endpoint"
    )
    info.add_argument("--json", action="store_true", help="print the raw answer as JSON")
    info.add_argument("--max-routes", type=int, default=1000, help="show at most this many routes")
    info.add_argument("--filter", default="", help="only routes whose name contains this text")
    args = parser.parse_args(argv)
    try:
        if args.command == "node":
            return asyncio.run(_run_node(args.config, args.endpoint, args.metrics, args.log_level))
        if args.command == "node-info":
            return asyncio.run(_node_info(args))
    except (slim_bindings.SlimError, OSError) as e:
        print(f"python -m slim_bindings {args.command}: {e}", file=sys.stderr)
        return 1
    print(_build_info())
    return 0


if __name__ == "__main__":
    sys.exit(main())
