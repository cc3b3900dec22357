"""Multicast example.

Moderator (``--remote <channel> --invites <member> ...``): creates the multicast session on the
channel, invites the members, then publishes every line read from standard input. ``exit`` or
end of input stops it cleanly.

Member (no ``--invites``): waits to be invited, prints every message of the channel as
``<local> -> Received message from <sender>: <text>``, and publishes the lines typed on its own
standard input (``exit`` stops it; end of input only stops reading).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import signal
import sys
import threading
from typing import Any

from common import color, common_options, create_local_app, format_message, format_message_print, split_id

import slim_bindings

EXIT_COMMAND = "exit"
# How long the moderator holds its first message for invited members that have not joined yet.
JOIN_WAIT_S = 60.0


def _stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines of standard input on a queue; None marks end of input. A daemon thread reads, so a
    pending read never keeps the process alive at exit."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def reader() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
        except (OSError, ValueError, RuntimeError):
            pass
        try:
            loop.call_soon_threadsafe(queue.put_nowait, None)
        except RuntimeError:
            pass  # the loop is already closed

    threading.Thread(target=reader, name="stdin-reader", daemon=True).start()
    return queue


def _display_name(name: slim_bindings.PyName) -> str:
    parts = name.components_strings()
    return "/".join(parts) if any(parts) else str(name)


async def _receive_loop(
    local_app: slim_bindings.Slim,
    local: str,
    session_ready: asyncio.Future[slim_bindings.PySessionInfo],
) -> None:
    """Prints every message of the session (a member first waits to be invited)."""
    if not session_ready.done():
        format_message_print(local, "-> Waiting for session...")
        info, _first = await local_app.receive()
        session_ready.set_result(info)
    session = session_ready.result()
    while True:
        try:
            info, payload = await local_app.receive(session=session.id)
        except (slim_bindings.SessionClosedError, slim_bindings.SessionNotFoundError):
            format_message_print(local, "-> Session closed")
            return
        except slim_bindings.SlimError as e:
            # One failed message (timeout, loss) does not end the conversation.
            format_message_print(local, f"-> Error receiving message: {e}")
            continue
        sender = _display_name(info.source_name)
        format_message_print(local, f"-> Received message from {sender}: {payload.decode(errors='replace')}")


async def _keyboard_loop(
    local_app: slim_bindings.Slim,
    local: str,
    topic: slim_bindings.PyName | None,
    session_ready: asyncio.Future[slim_bindings.PySessionInfo],
    is_moderator: bool,
    joins: list[asyncio.Task[None]],
) -> None:
    """Publishes each input line on the channel. Returns on ``exit`` (and, for the moderator,
    at end of input). Lines wait until the pending invites have completed, so every invited
    member (with MLS: every member that can decrypt) gets them."""
    lines = _stdin_lines(asyncio.get_running_loop())
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print(f"{color.BOLD}message> {color.END}", end="", flush=True)
        line = await lines.get()
        if line is None:
            if is_moderator:
                return
            await asyncio.Event().wait()  # a member keeps receiving after its input ends
        assert line is not None
        if line.strip() == EXIT_COMMAND:
            return
        if not line:
            continue
        if not session_ready.done():
            format_message_print(local, "-> Not in a session yet; message not sent")
            continue
        pending = [j for j in joins if not j.done()]
        if pending:
            await asyncio.wait(pending, timeout=JOIN_WAIT_S)
        session = session_ready.result()
        channel = topic if topic is not None else session.destination_name
        try:
            await local_app.publish(session, line.encode(), channel)
        except slim_bindings.SlimError as e:
            format_message_print(local, f"-> Error sending message: {e}")


def _report_join(local: str, member: str, task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is None:
        format_message_print(local, f"-> {member} joined the group")
    else:
        format_message_print(local, f"-> could not add {member}: {error}")


async def run_client(**kwargs: Any) -> int:
    """Runs a moderator or a member; returns the exit code."""
    local: str = kwargs["local"]
    remote: str | None = kwargs["remote"]
    invites: tuple[str, ...] = kwargs["invites"] or ()
    enable_mls: bool = kwargs["enable_mls"]
    if invites and not remote:
        raise ValueError("--invites needs --remote (the channel name).")

    local_app = await create_local_app(
        local,
        kwargs["slim"],
        remote=remote,
        enable_opentelemetry=kwargs["enable_opentelemetry"],
        shared_secret=kwargs["shared_secret"],
        jwt=kwargs["jwt"],
        bundle=kwargs["bundle"],
        audience=kwargs["audience"],
    )
    topic = split_id(remote) if remote else None
    loop = asyncio.get_running_loop()
    session_ready: asyncio.Future[slim_bindings.PySessionInfo] = loop.create_future()
    is_moderator = bool(invites) and topic is not None
    joins: list[asyncio.Task[None]] = []

    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with local_app:
        if is_moderator:
            assert topic is not None
            format_message_print(local, "Creating new multicast sessions...")
            session = await local_app.create_session(
                slim_bindings.PySessionConfiguration.Multicast(
                    topic=topic,
                    moderator=True,
                    max_retries=5,
                    timeout=datetime.timedelta(seconds=5),
                    mls_enabled=enable_mls,
                )
            )
            session_ready.set_result(session)
            for p in invites:
                to_add = split_id(p)
                await local_app.set_route(to_add)
                # The invite goes out now; the task completes when the member has joined.
                join = asyncio.create_task(local_app.invite(session, to_add, wait=True))
                join.add_done_callback(functools.partial(_report_join, local, p))
                joins.append(join)
                print(f"{local} -> add {to_add} to the group", flush=True)

        receiver = asyncio.create_task(_receive_loop(local_app, local, session_ready))
        keyboard = asyncio.create_task(
            _keyboard_loop(local_app, local, topic, session_ready, is_moderator, joins)
        )
        stopping = asyncio.create_task(stop.wait())
        waiting = {keyboard, stopping} if is_moderator else {receiver, keyboard, stopping}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for t in (receiver, keyboard, stopping, *joins):
            t.cancel()
        results = await asyncio.gather(receiver, keyboard, stopping, return_exceptions=True)
        await asyncio.gather(*joins, return_exceptions=True)
        if is_moderator and session_ready.done():
            try:
                await local_app.delete_session(session_ready.result())
            except slim_bindings.SlimError:
                pass
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                print(format_message(local, f"-> Error: {r!r}"), file=sys.stderr)
                return 1
    return 0


@common_options
def main(**kwargs: Any) -> None:
    """SLIM multicast example: a moderator invites members; everyone chats on one channel."""
    try:
        code = asyncio.run(run_client(**kwargs))
    except KeyboardInterrupt:
        print("Client interrupted by user.")
        code = 130
    except (ValueError, slim_bindings.SlimError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
