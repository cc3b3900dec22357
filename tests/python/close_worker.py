"""Worker process for test_close.py: sends COUNT numbered messages to a name, then returns at once.

    python close_worker.py --endpoint http://127.0.0.1:P --local org/close/sender --remote org/close/reader
                           --count N --keep local|global|delete [--reliable]

`--keep local`: the app is dropped as the coroutine returns (the close of a dropped app);
`--keep global`: a module global still holds it at interpreter exit (the close at exit).
Prints {"event": "sent", "count": N} once every publish call has returned, then exits 0.
`--keep delete`: the session is deleted as soon as the last publish call has returned, and the app
stays open until stdin closes; prints {"event": "deleted", "after": <what a publish on the deleted
session raised>} once the delete has returned.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys

from slim_bindings import PySessionConfiguration
from worker_io import emit, new_app, split

SECRET = "close-secret-0123456789abcdef"
KEPT: list[object] = []


async def main(args: argparse.Namespace) -> None:
    app = await new_app(args.local, args.endpoint, SECRET)
    remote = split(args.remote)
    await app.set_route(remote)
    if args.reliable:
        config = PySessionConfiguration.Unicast(timeout=datetime.timedelta(seconds=1), max_retries=5)
    else:
        config = PySessionConfiguration.Anycast()
    session = await app.create_session(config)
    payloads = [i.to_bytes(4, "big") for i in range(args.count)]
    for start in range(0, args.count, 64):
        await asyncio.wait_for(app.publish_many(session, payloads[start : start + 64], remote), 30)
    if args.keep == "global":
        KEPT.append(app)
    emit("sent", count=args.count)
    if args.keep == "delete":
        await app.delete_session(session)
        try:
            await app.publish(session, b"after", remote)
            after = "nothing"
        except Exception as e:  # noqa: BLE001 - its type is the answer
            after = type(e).__name__
        emit("deleted", after=after)
        await asyncio.to_thread(sys.stdin.read)  # open until the test closes stdin


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--local", required=True)
    p.add_argument("--remote", required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--keep", choices=["local", "global", "delete"], required=True)
    p.add_argument("--reliable", action="store_true")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
