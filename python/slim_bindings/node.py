"""Running a SLIM node from the package, and asking a node what it knows (docs/mesh.md).

    runner = await start_node(config_yaml=open("node.yaml").read())   # or endpoint="127.0.0.1:46357"
    ...
    await stop_node(runner)

    info = await node_info("http://127.0.0.1:46357")   # links, routes, mesh nodes, counters
    print(format_node_info(info))

``python -m slim_bindings node --config node.yaml`` and ``python -m slim_bindings node-info
--endpoint http://127.0.0.1:46357`` are these, from the command line.
"""

from __future__ import annotations

import json
from typing import Any

from ._slim_bindings import NodeRunner, start_node, stop_node
from ._slim_bindings import node_info as _node_info

__all__ = ["NodeRunner", "format_node_info", "node_info", "start_node", "stop_node"]


async def node_info(
    config: dict[str, Any] | str, max_routes: int = 1000, name_filter: str = ""
) -> dict[str, Any]:
    """What the node at ``config`` knows: ``links`` (peer, kind, direction, up, counters),
    ``routes`` (name, kind, next hop, cost), ``nodes`` (the mesh as this node sees it) and
    ``counters``. ``config`` is a client dict (same keys as ``Slim.connect``: endpoint, TLS, auth)
    or just a plaintext endpoint URL."""
    if isinstance(config, str):
        config = {"endpoint": config, "tls": {"insecure": True}}
    info: dict[str, Any] = json.loads(await _node_info(config, max_routes, name_filter))
    return info


def format_node_info(info: dict[str, Any]) -> str:
    """A plain-text report of :func:`node_info`'s result."""
    lines = [f"node {info['label']} ({info['node_id']}), mesh {'on' if info['mesh'] else 'off'}", ""]
    lines.append("links:")
    lines.append(f"  {'conn':>5}  {'kind':<5}  {'dir':<5}  {'state':<5}  {'in':>9}  {'out':>9}  peer")
    for link in info["links"]:
        peer = link["peer"]
        if link["peer_label"]:
            peer += f" (node {link['peer_label']} {link['peer_node']})"
        state = "up" if link["up"] else "down"
        lines.append(
            f"  {link['conn']:>5}  {link['kind']:<5}  {link['direction']:<5}  {state:<5}  "
            f"{link['messages_in']:>9}  {link['messages_out']:>9}  {peer}"
        )
    lines.append("")
    shown, total = len(info["routes"]), info["routes_total"]
    lines.append(f"routes ({shown} of {total}):" if shown < total else f"routes ({total}):")
    lines.append(f"  {'name':<40}  {'kind':<8}  {'conn':>5}  {'cost':>4}  next hop / origin")
    for r in info["routes"]:
        via = (
            f"{r['next_hop_label'] or r['next_hop_node']} / {r['origin_label'] or r['origin']}"
            if r["kind"] == "mesh"
            else ""
        )
        lines.append(f"  {r['name']:<40}  {r['kind']:<8}  {r['conn']:>5}  {r['cost']:>4}  {via}")
    if info["nodes"]:
        lines.append("")
        lines.append("mesh nodes:")
        for n in info["nodes"]:
            state = "reachable" if n["reachable"] else "unreachable"
            lines.append(
                f"  {n['label']:<16} {n['node']}  cost {n['cost']:>2}  {n['names']:>6} names  {state}"
            )
    lines.append("")
    lines.append("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(info["counters"].items())))
    return "\n".join(lines)
