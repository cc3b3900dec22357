"""Worker process for test_paused_app.py: an app that reads COUNT messages and reports them.

    python pause_worker.py --endpoint http://127.0.0.1:P --local org/pause/reader --count N

Prints {"event": "ready"} once connected, then {"event": "done", "got": [...], "reconnects": R}
with the numbers it read (4-byte big-endian payloads) and how often its connection was redialed.
Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio

from worker_io import emit, new_app

SECRET = "close-secret-0123456789abcdef"


async def main(args: argparse.Namespace) -> None:
    app = await new_app(args.local, args.endpoint, SECRET)
    emit("ready")
    got: list[int] = []
    try:
        # The session's first message announces it; it is also the first its queue gives.
        info, _first = await asyncio.wait_for(app.receive(), args.idle)
        while len(got) < args.count:
            _info, blob = await asyncio.wait_for(app.receive(session=info.id), args.idle)
            got.append(int.from_bytes(blob[:4], "big"))
    except asyncio.TimeoutError:
        pass
    emit("done", got=got, reconnects=app.svc.node_stats()["reconnects"])


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--local", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--idle", type=float, default=30.0, help="give up after this long without a message")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
