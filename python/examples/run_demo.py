"""Unattended multicast demo: a node, two members and a moderator that sends a few lines.

Exits 0 only if both members printed every line. Every process it starts is stopped before it
returns, and every wait is bounded.

    python python/examples/run_demo.py [--enable-mls] [--timeout 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LINES = ["hello from the moderator", "second line", "third and last line"]
MEMBERS = ["agntcy/ns/client-1", "agntcy/ns/client-2"]
CHANNEL = "agntcy/ns/chat"
MODERATOR = "agntcy/ns/moderator"


class Proc:
    """A child process whose output lines are echoed with a prefix and kept for matching."""

    def __init__(self, label: str, proc: asyncio.subprocess.Process) -> None:
        self.label = label
        self.proc = proc
        self.lines: list[str] = []
        self.changed = asyncio.Condition()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                break
            line = ANSI.sub("", raw.decode(errors="replace")).rstrip()
            print(f"[{self.label}] {line}", flush=True)
            async with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, pattern: str, deadline: float) -> re.Match[str]:
        """The first output line matching ``pattern``; TimeoutError at ``deadline``."""
        rx = re.compile(pattern)

        def find() -> re.Match[str] | None:
            for line in self.lines:
                m = rx.search(line)
                if m:
                    return m
            return None

        async with self.changed:
            while (m := find()) is None:
                if self.reader.done():
                    raise RuntimeError(f"{self.label} exited before printing /{pattern}/")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.label} did not print /{pattern}/ in time")
                try:
                    await asyncio.wait_for(self.changed.wait(), remaining)
                except asyncio.TimeoutError:
                    pass
            return m

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((line + "\n").encode())
        await self.proc.stdin.drain()

    async def stop(self, grace: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
        if self.proc.returncode is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await asyncio.gather(self.reader, return_exceptions=True)
        return self.proc.returncode if self.proc.returncode is not None else -1


async def start(label: str, *args: str) -> Proc:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=str(HERE),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    return Proc(label, proc)


async def demo(enable_mls: bool, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    procs: list[Proc] = []
    try:
        node = await start("node", "slim.py", "--slim", "127.0.0.1:0")
        procs.append(node)
        m = await node.wait_for(r"listening on (\S+:\d+)", deadline)
        client_cfg = json.dumps({"endpoint": f"http://{m.group(1)}", "tls": {"insecure": True}})
        common = ["--slim", client_cfg, "--shared-secret", "demo-secret"]
        if enable_mls:
            common.append("--enable-mls")

        members = []
        for name in MEMBERS:
            member = await start(
                name.split("/")[-1], "multicast.py", "--local", name, "--remote", CHANNEL, *common
            )
            procs.append(member)
            members.append(member)
        for member in members:
            await member.wait_for(r"Waiting for session", deadline)

        invites = [arg for name in MEMBERS for arg in ("--invites", name)]
        moderator = await start(
            "moderator", "multicast.py", "--local", MODERATOR, "--remote", CHANNEL, *invites, *common
        )
        procs.append(moderator)
        for name in MEMBERS:
            await moderator.wait_for(re.escape("add ") + r".*" + re.escape(name.split("/")[-1]), deadline)

        for text in LINES:
            await moderator.send(text)
            for member in members:
                await member.wait_for(r"Received message from .*: " + re.escape(text) + "$", deadline)

        await moderator.send("exit")
        try:
            code = await asyncio.wait_for(moderator.proc.wait(), max(1.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            print("demo: the moderator did not exit after 'exit'", flush=True)
            return 1
        if code != 0:
            print(f"demo: the moderator exited with {code}", flush=True)
            return 1
        print(f"demo: OK, both members received all {len(LINES)} lines", flush=True)
        return 0
    except (TimeoutError, RuntimeError) as e:
        print(f"demo: FAILED: {e}", flush=True)
        return 1
    finally:
        for p in reversed(procs):
            await p.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enable-mls", action="store_true", help="run the group with MLS")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on the whole demo, seconds")
    args = parser.parse_args()
    sys.exit(asyncio.run(demo(args.enable_mls, args.timeout)))


if __name__ == "__main__":
    main()
