"""Point-to-point example: ``python point_to_point.py [anycast|unicast] --local ... [options]``.

Receiver mode (no ``--message``): waits for sessions and answers every message with
``"<message> from <id>"``. Sender mode (``--message`` and ``--remote``): sends the message
``--iterations`` times, one per second, and prints each reply. Anycast sessions may reach any
instance of the remote name per message; unicast sessions pin one instance (and may use MLS).
"""

from __future__ import annotations

import asyncio
import datetime
import signal
import sys
from typing import Any

from common import common_options, create_local_app, format_message_print, p2p_options, split_id

import slim_bindings

REPLY_TIMEOUT_S = 10.0


async def _serve_session(local_app: slim_bindings.Slim, session: slim_bindings.PySessionInfo) -> None:
    """Answers every message of one inbound session until it closes."""
    instance = local_app.get_id()
    while True:
        try:
            info, msg = await local_app.receive(session=session.id)
        except (slim_bindings.SessionClosedError, slim_bindings.SessionNotFoundError):
            return
        except slim_bindings.SlimError as e:
            format_message_print(f"{instance}", f"received error: {e}")
            continue
        text = msg.decode(errors="replace")
        format_message_print(f"{instance}", f"received (from session {info.id}): {text}")
        if not info.destination_name.equal_without_id(local_app.local_name):
            format_message_print(f"{instance}", f"unexpected destination {info.destination_name}")
            continue
        reply = f"{text} from {instance}"
        await local_app.publish_to(info, reply.encode())
        format_message_print(f"{instance}", f"replies: {reply}")


async def _receiver(local_app: slim_bindings.Slim, stop: asyncio.Event) -> int:
    instance = local_app.get_id()
    tasks: set[asyncio.Task[None]] = set()
    format_message_print(f"{instance}", "waiting for new session to be established")
    new_session = asyncio.ensure_future(local_app.receive())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            done, _ = await asyncio.wait({new_session, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return 0
            info, _first = new_session.result()
            format_message_print(f"{instance}", f"received a new session: {info.id}")
            task = asyncio.create_task(_serve_session(local_app, info))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            new_session = asyncio.ensure_future(local_app.receive())
    finally:
        for t in (new_session, stopping, *tasks):
            t.cancel()
        await asyncio.gather(new_session, stopping, *tasks, return_exceptions=True)


async def _sender(
    local_app: slim_bindings.Slim, remote: str, message: str, iterations: int, unicast: bool, enable_mls: bool
) -> int:
    instance = local_app.get_id()
    remote_name = split_id(remote)
    await local_app.set_route(remote_name)
    config: slim_bindings.PySessionConfiguration
    if unicast or enable_mls:
        format_message_print(f"{instance}", f"creating unicast session (mls={enable_mls})")
        config = slim_bindings.PySessionConfiguration.Unicast(
            timeout=datetime.timedelta(seconds=5), max_retries=5, mls_enabled=enable_mls
        )
    else:
        config = slim_bindings.PySessionConfiguration.Anycast()
    session = await local_app.create_session(config)

    failures = 0
    for i in range(iterations):
        await local_app.publish(session, message.encode(), remote_name)
        format_message_print(f"{instance}", f"Sent message {message} - {i + 1}/{iterations}:")
        try:
            info, reply = await asyncio.wait_for(local_app.receive(session=session.id), REPLY_TIMEOUT_S)
        except (asyncio.TimeoutError, slim_bindings.SlimError) as e:
            format_message_print(f"{instance}", f"received error: {e!r}")
            failures += 1
            continue
        format_message_print(
            f"{instance}", f"received (from session {info.id}): {reply.decode(errors='replace')}"
        )
        if not info.destination_name.equal_without_id(local_app.local_name):
            format_message_print(f"{instance}", f"reply addressed to {info.destination_name}, not to us")
            return 1
        if i + 1 < iterations:
            await asyncio.sleep(1)
    await local_app.delete_session(session)
    return 1 if failures else 0


async def run_client(unicast: bool, **kwargs: Any) -> int:
    """Runs the example in sender or receiver mode; returns the exit code."""
    message: str | None = kwargs["message"]
    remote: str | None = kwargs["remote"]
    if message and not remote:
        raise ValueError("Remote ID must be provided when message is specified.")
    enable_mls = bool(kwargs["enable_mls"]) and unicast

    local_app = await create_local_app(
        kwargs["local"],
        kwargs["slim"],
        remote=remote,
        enable_opentelemetry=kwargs["enable_opentelemetry"],
        shared_secret=kwargs["shared_secret"],
        jwt=kwargs["jwt"],
        bundle=kwargs["bundle"],
        audience=kwargs["audience"],
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with local_app:
        if message and remote:
            sender = asyncio.ensure_future(
                _sender(local_app, remote, message, kwargs["iterations"], unicast, enable_mls)
            )
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({sender, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if sender in done:
                return sender.result()
            sender.cancel()
            return 130
        return await _receiver(local_app, stop)


def _run(unicast: bool, kwargs: dict[str, Any]) -> None:
    try:
        code = asyncio.run(run_client(unicast, **kwargs))
    except KeyboardInterrupt:
        print("Client interrupted by user.")
        code = 130
    except (ValueError, slim_bindings.SlimError) as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)


@common_options
@p2p_options
def main_anycast(**kwargs: Any) -> None:
    """Anycast: each message may reach a different instance of --remote (no MLS)."""
    kwargs["enable_mls"] = False
    _run(False, kwargs)


@common_options
@p2p_options
def main_unicast(**kwargs: Any) -> None:
    """Unicast: one instance of --remote is pinned for the session (optionally with MLS)."""
    _run(True, kwargs)


def main() -> None:
    """``point_to_point.py [anycast|unicast] OPTIONS`` (anycast when the mode is omitted)."""
    args = sys.argv[1:]
    mode = "anycast"
    if args and args[0] in ("anycast", "unicast"):
        mode = args.pop(0)
    command = main_unicast if mode == "unicast" else main_anycast
    command.main(args=args, prog_name=f"point_to_point.py {mode}")


if __name__ == "__main__":
    main()
