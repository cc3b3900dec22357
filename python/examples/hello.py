"""Two apps exchange a message through a node, all in one process (README's example)."""

import asyncio
import datetime

import slim_bindings
from slim_bindings import PyIdentityProvider, PyIdentityVerifier, PyName, PySessionConfiguration


async def new_app(name: PyName) -> slim_bindings.Slim:
    provider = PyIdentityProvider.SharedSecret(identity=str(name), shared_secret="secret")
    verifier = PyIdentityVerifier.SharedSecret(identity=str(name), shared_secret="secret")
    return await slim_bindings.Slim.new(name, provider, verifier)


async def main() -> None:
    node = await new_app(PyName("agntcy", "ns", "node"))
    endpoint = await node.run_server_bound({"endpoint": "127.0.0.1:0", "tls": {"insecure": True}})
    client = {"endpoint": f"http://{endpoint}", "tls": {"insecure": True}}

    alice_name, bob_name = PyName("agntcy", "ns", "alice"), PyName("agntcy", "ns", "bob")
    alice, bob = await new_app(alice_name), await new_app(bob_name)
    await alice.connect(client)
    await bob.connect(client)
    await alice.set_route(bob_name)

    session = await alice.create_session(
        PySessionConfiguration.Unicast(timeout=datetime.timedelta(seconds=1), max_retries=5)
    )
    async with alice, bob:
        await alice.publish(session, b"hello", bob_name)
        async for info, payload in bob.sessions():  # a session alice opened with bob
            print("bob got", payload, "from", info.source_name)
            await bob.publish_to(info, b"hi alice")
            break
        try:
            async for info, payload in alice.messages(session):  # this session's messages
                print("alice got", payload)
                break
        except slim_bindings.SLIMTimeoutError as e:  # also a TimeoutError
            print("not acknowledged:", e.message_id)


asyncio.run(main())
