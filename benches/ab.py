#!/usr/bin/env python3
"""Same-run A/B of two builds of our package (benches/e2e.py's scenario, interleaved A, B, A, B, ...).

On a shared machine rates drift by the minute; CPU microseconds per message (user + system of node and
both apps, from /proc) barely do, and interleaving puts A and B under the same load. Each build is a
python that imports it: a venv's python, or a wrapper script that sets PYTHONPATH to a copy of the
package (`cp -r python/slim_bindings /tmp/base/` after building A).

Usage:  python benches/ab.py --a /tmp/base/python --b .venv/bin/python [--repeat 3] [--messages 100000]
        [--reliable] [--batch 64] [--round-trips 1000]
Prints, per build: the medians of CPU us/msg (all processes and each one), msgs/s and round-trip p50,
then B/A ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e

PROCS = ("node", "responder", "requester")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="python that imports build A")
    p.add_argument("--b", required=True, help="python that imports build B")
    p.add_argument("--repeat", type=int, default=3)
    e2e.add_scenario_options(p, messages=100_000, seconds=30.0, round_trips=1000)
    cli = p.parse_args()
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for r in range(cli.repeat):
        for label, python in (("A", cli.a), ("B", cli.b)):
            args = argparse.Namespace(
                **vars(cli),
                ours_python=python,
                node="own",
                ours_node="package",
                slim_bin=None,
                identity="shared",
                otel_mode=None,
            )
            res = e2e.run_impl("ours", python, args)
            runs[label].append(res)
            cpu = {k: 1e6 * v / max(1, res["received"]) for k, v in res["stream_cpu"].items()}
            print(
                f"run {r + 1} {label}: {res['cpu_us_per_msg']:.2f} us/msg "
                f"(node {cpu['node']:.2f}, responder {cpu['responder']:.2f}, requester {cpu['requester']:.2f}), "
                f"{res['recv_rate']:,.0f} msgs/s, p50 {res['p50_ms']:.3f} ms, received {res['received']:,}",
                flush=True,
            )

    def med(label: str, f) -> float:
        return statistics.median(f(x) for x in runs[label])

    rows = [("CPU us/msg, all", lambda x: x["cpu_us_per_msg"])]
    for proc in PROCS:
        rows.append(
            (f"CPU us/msg, {proc}", lambda x, proc=proc: 1e6 * x["stream_cpu"][proc] / max(1, x["received"]))
        )
    rows += [
        ("msgs/s at receiver", lambda x: x["recv_rate"]),
        ("round-trip p50 ms", lambda x: x["p50_ms"]),
        ("round-trip p90 ms", lambda x: x["p90_ms"]),
    ]
    kind = "reliable" if cli.reliable else "default"
    print(
        f"\n{cli.size}-byte messages, {kind} session, publish batch {cli.batch}, medians of {cli.repeat} "
        f"interleaved runs"
    )
    print(f"{'':24}{'A':>12}{'B':>12}{'B/A':>8}")
    for label, f in rows:
        a, b = med("A", f), med("B", f)
        print(f"{label:24}{a:>12,.3f}{b:>12,.3f}{(b / a if a else float('nan')):>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
