# Hand-kept stub of the native module slim_bindings._slim_bindings (see src/python/*.rs).
# Every function marked `async def` returns a coroutine and must be awaited inside a running
# asyncio loop.

import datetime
from collections.abc import Sequence
from typing import Any, ClassVar, Final, TypeAlias, final

from typing_extensions import Self, disjoint_base

__version__: Final[str]
build_profile: Final[str]
build_info: Final[str]
SESSION_UNSPECIFIED: Final[int]
# The native module lists every name it defines (in the order they are added).
__all__ = [
    "SESSION_UNSPECIFIED",
    "NodeRunner",
    "PyAlgorithm",
    "PyIdentityProvider",
    "PyIdentityVerifier",
    "PyKey",
    "PyKeyData",
    "PyKeyFormat",
    "PyName",
    "PyService",
    "PySessionConfiguration",
    "PySessionInfo",
    "PySessionType",
    "__version__",
    "_error_samples",
    "build_info",
    "build_profile",
    "connect",
    "create_pyservice",
    "create_session",
    "delete_session",
    "disconnect",
    "get_session_config",
    "init_tracing",
    "invite",
    "node_info",
    "participants",
    "publish",
    "publish_many",
    "receive",
    "receive_new_session",
    "receive_session",
    "receive_session_many",
    "remove",
    "remove_route",
    "run_server",
    "run_server_bound",
    "set_default_session_config",
    "set_route",
    "set_session_config",
    "shutdown_runtime",
    "start_node",
    "stop_node",
    "stop_server",
    "subscribe",
    "try_receive_session",
    "unsubscribe",
]

@final
class PyName:
    """A SLIM name: three hashed string components plus an instance id."""

    def __new__(cls, component0: str, component1: str, component2: str, id: int | None = None) -> Self: ...
    @property
    def id(self) -> int: ...
    @id.setter
    def id(self, value: int) -> None: ...
    def components(self) -> list[int]: ...
    def components_strings(self) -> list[str]: ...
    def equal_without_id(self, other: PyName) -> bool: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class PyService:
    """One local app with its own embedded node (from `create_pyservice`)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> PyName: ...
    def subscribed_names(self) -> list[PyName]:
        """Names subscribed on this app's node, over all its connections."""
    def node_stats(self) -> dict[str, int]:
        """Counters of this app's node and of its session layer: messages routed, drops by
        reason, ``session_queue_dropped``, ``messages_lost_reported``, ``mesh_dropped_<reason>``, ...
        (docs/reliability.md)."""

@final
class PySessionInfo:
    """A session id plus what is known about the last message received on it."""

    def __new__(cls, session_id: int) -> Self: ...
    @property
    def id(self) -> int: ...
    @property
    def source_name(self) -> PyName: ...
    @property
    def destination_name(self) -> PyName: ...
    @property
    def message_id(self) -> int: ...
    @property
    def payload_type(self) -> str: ...
    @property
    def metadata(self) -> dict[str, str]: ...

@final
class PySessionType:
    """The kind of a session (exported for compatibility; no function takes it). A native enum: each member is a class attribute; ``int(member)`` is its value and
    a member compares equal to its value, but members are not ints and the class is not iterable
    (not an ``enum.IntEnum``)."""

    ANYCAST: ClassVar[PySessionType]
    UNICAST: ClassVar[PySessionType]
    MULTICAST: ClassVar[PySessionType]
    def __int__(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@disjoint_base
class PySessionConfiguration:
    """How a session behaves (Anycast, Unicast or Multicast)."""

    @final
    class Anycast(PySessionConfiguration):
        __match_args__ = ("timeout", "max_retries", "mls_enabled", "liveness_timeout")
        def __new__(
            cls,
            timeout: datetime.timedelta | None = None,
            max_retries: int | None = None,
            mls_enabled: bool = False,
            liveness_timeout: datetime.timedelta = ...,
        ) -> Self: ...
        @property
        def timeout(self) -> datetime.timedelta | None: ...
        @property
        def max_retries(self) -> int | None: ...
        @property
        def mls_enabled(self) -> bool: ...
        @property
        def liveness_timeout(self) -> datetime.timedelta: ...

    @final
    class Unicast(PySessionConfiguration):
        __match_args__ = ("timeout", "max_retries", "mls_enabled", "liveness_timeout")
        def __new__(
            cls,
            timeout: datetime.timedelta | None = None,
            max_retries: int | None = None,
            mls_enabled: bool = False,
            liveness_timeout: datetime.timedelta = ...,
        ) -> Self: ...
        @property
        def timeout(self) -> datetime.timedelta | None: ...
        @property
        def max_retries(self) -> int | None: ...
        @property
        def mls_enabled(self) -> bool: ...
        @property
        def liveness_timeout(self) -> datetime.timedelta: ...

    @final
    class Multicast(PySessionConfiguration):
        __match_args__ = ("topic", "moderator", "max_retries", "timeout", "mls_enabled", "liveness_timeout")
        def __new__(
            cls,
            topic: PyName,
            moderator: bool = False,
            max_retries: int = 0,
            timeout: datetime.timedelta = ...,
            mls_enabled: bool = False,
            liveness_timeout: datetime.timedelta = ...,
        ) -> Self: ...
        @property
        def topic(self) -> PyName: ...
        @property
        def moderator(self) -> bool: ...
        @property
        def max_retries(self) -> int: ...
        @property
        def timeout(self) -> datetime.timedelta: ...
        @property
        def mls_enabled(self) -> bool: ...
        @property
        def liveness_timeout(self) -> datetime.timedelta: ...

@final
class PyAlgorithm:
    """A JWT signing and verification algorithm. A native enum: each member is a class attribute; ``int(member)`` is its value and
    a member compares equal to its value, but members are not ints and the class is not iterable
    (not an ``enum.IntEnum``)."""

    HS256: ClassVar[PyAlgorithm]
    HS384: ClassVar[PyAlgorithm]
    HS512: ClassVar[PyAlgorithm]
    ES256: ClassVar[PyAlgorithm]
    ES384: ClassVar[PyAlgorithm]
    RS256: ClassVar[PyAlgorithm]
    RS384: ClassVar[PyAlgorithm]
    RS512: ClassVar[PyAlgorithm]
    PS256: ClassVar[PyAlgorithm]
    PS384: ClassVar[PyAlgorithm]
    PS512: ClassVar[PyAlgorithm]
    EdDSA: ClassVar[PyAlgorithm]
    def __int__(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@final
class PyKeyFormat:
    """How key material is encoded. A native enum: each member is a class attribute; ``int(member)`` is its value and
    a member compares equal to its value, but members are not ints and the class is not iterable
    (not an ``enum.IntEnum``)."""

    Pem: ClassVar[PyKeyFormat]
    Jwk: ClassVar[PyKeyFormat]
    Jwks: ClassVar[PyKeyFormat]
    def __int__(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __ne__(self, value: object, /) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]

@disjoint_base
class PyKeyData:
    @final
    class File(PyKeyData):
        __match_args__ = ("path",)
        def __new__(cls, path: str) -> Self: ...
        @property
        def path(self) -> str: ...

    @final
    class Content(PyKeyData):
        __match_args__ = ("content",)
        def __new__(cls, content: str) -> Self: ...
        @property
        def content(self) -> str: ...

@final
class PyKey:
    algorithm: PyAlgorithm
    format: PyKeyFormat
    key: PyKeyData
    def __new__(cls, algorithm: PyAlgorithm, format: PyKeyFormat, key: PyKeyData) -> Self: ...

@disjoint_base
class PyIdentityProvider:
    @final
    class StaticJwt(PyIdentityProvider):
        __match_args__ = ("path",)
        def __new__(cls, path: str) -> Self: ...
        @property
        def path(self) -> str: ...

    @final
    class Jwt(PyIdentityProvider):
        __match_args__ = ("private_key", "duration", "issuer", "audience", "subject")
        def __new__(
            cls,
            private_key: PyKey,
            duration: datetime.timedelta,
            issuer: str | None = None,
            audience: list[str] | None = None,
            subject: str | None = None,
        ) -> Self: ...
        @property
        def private_key(self) -> PyKey: ...
        @property
        def duration(self) -> datetime.timedelta: ...
        @property
        def issuer(self) -> str | None: ...
        @property
        def audience(self) -> list[str] | None: ...
        @property
        def subject(self) -> str | None: ...

    @final
    class SharedSecret(PyIdentityProvider):
        __match_args__ = ("identity", "shared_secret")
        def __new__(cls, identity: str, shared_secret: str) -> Self: ...
        @property
        def identity(self) -> str: ...
        @property
        def shared_secret(self) -> str: ...

@disjoint_base
class PyIdentityVerifier:
    @final
    class Jwt(PyIdentityVerifier):
        __match_args__ = (
            "public_key",
            "autoresolve",
            "issuer",
            "audience",
            "subject",
            "require_iss",
            "require_aud",
            "require_sub",
        )
        def __new__(
            cls,
            public_key: PyKey | None = None,
            autoresolve: bool = False,
            issuer: str | None = None,
            audience: list[str] | None = None,
            subject: str | None = None,
            require_iss: bool = False,
            require_aud: bool = False,
            require_sub: bool = False,
        ) -> Self: ...
        @property
        def public_key(self) -> PyKey | None: ...
        @property
        def autoresolve(self) -> bool: ...
        @property
        def issuer(self) -> str | None: ...
        @property
        def audience(self) -> list[str] | None: ...
        @property
        def subject(self) -> str | None: ...
        @property
        def require_iss(self) -> bool: ...
        @property
        def require_aud(self) -> bool: ...
        @property
        def require_sub(self) -> bool: ...

    @final
    class SharedSecret(PyIdentityVerifier):
        __match_args__ = ("identity", "shared_secret")
        def __new__(cls, identity: str, shared_secret: str) -> Self: ...
        @property
        def identity(self) -> str: ...
        @property
        def shared_secret(self) -> str: ...

_Session: TypeAlias = PySessionInfo | int
_Blob: TypeAlias = bytes | bytearray | memoryview | list[int]

async def create_pyservice(
    name: PyName, provider: PyIdentityProvider, verifier: PyIdentityVerifier
) -> PyService: ...
async def run_server(svc: PyService, config: dict[str, Any]) -> None: ...
async def run_server_bound(svc: PyService, config: dict[str, Any]) -> str: ...
async def stop_server(svc: PyService, endpoint: str) -> None: ...
async def connect(svc: PyService, config: dict[str, Any]) -> int: ...
async def disconnect(svc: PyService, conn: int) -> None: ...
async def subscribe(svc: PyService, conn: int, name: PyName) -> None: ...
async def unsubscribe(svc: PyService, conn: int, name: PyName) -> None: ...
async def set_route(svc: PyService, conn: int, name: PyName) -> None: ...
async def remove_route(svc: PyService, conn: int, name: PyName) -> None: ...
async def create_session(svc: PyService, config: PySessionConfiguration) -> PySessionInfo:
    """Creates a session (only ``id`` is set on the result).

    Bounds: a point-to-point session holds at most 16 MiB for sending (publishes waiting plus
    reliable messages not yet acknowledged); its receive queue holds 16,384 messages or 4 MiB of
    payload, whichever fills first."""

async def delete_session(svc: PyService, session: _Session) -> None: ...
async def get_session_config(svc: PyService, session: _Session) -> PySessionConfiguration: ...
async def set_session_config(svc: PyService, session: _Session, config: PySessionConfiguration) -> None: ...
async def set_default_session_config(svc: PyService, config: PySessionConfiguration) -> None: ...
async def publish(
    svc: PyService,
    session_info: _Session,
    fanout: int,
    blob: _Blob,
    name: PyName | None = None,
    payload_type: str | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Sends ``blob`` on a session to ``name`` (or, ``name=None``, back to the sender of
    ``session_info``).

    Point to point, the payload counts against the session's 16 MiB send buffer until it is sent
    (unreliable) or acknowledged or timed out (reliable). When the buffer is full the call waits
    for room, up to 5 s or ``timeout * (max_retries + 1)`` when that is longer, then raises
    ``SendBufferFullError`` (a ``TimeoutError``; the message was not sent). Nothing is dropped.
    A payload plus metadata over 4 MiB - 64 KiB raises ``MessageTooLargeError`` (a ``ValueError``)
    at once, nothing sent."""

async def publish_many(
    svc: PyService,
    session_info: _Session,
    fanout: int,
    blobs: Sequence[_Blob],
    name: PyName | None = None,
    payload_type: str | None = None,
    metadata: dict[str, str] | None = None,
) -> None:
    """Sends every payload of ``blobs``, in order, as ``publish`` would one by one, in one call:
    what there is room for is handed over without awaiting; the call waits (as ``publish`` does)
    only while the send buffer or the node's queue is full. On an error the messages before the
    failing one were sent and the rest were not; the exception's ``sent`` says how many."""

async def invite(
    svc: PyService,
    session_info: _Session,
    name: PyName,
    wait: bool = False,
    timeout: datetime.timedelta | float | None = None,
) -> None: ...
async def remove(svc: PyService, session_info: _Session, name: PyName) -> None: ...
async def participants(svc: PyService, session_info: _Session) -> list[PyName]: ...
async def receive(svc: PyService) -> tuple[PySessionInfo, bytes]: ...
async def receive_new_session(
    svc: PyService, timeout: datetime.timedelta | float | None = None
) -> tuple[PySessionInfo, bytes]: ...
async def receive_session(
    svc: PyService, session: _Session, timeout: datetime.timedelta | float | None = None
) -> tuple[PySessionInfo, bytes]: ...
async def receive_session_many(
    svc: PyService,
    session: _Session,
    max_messages: int = 4096,
    timeout: datetime.timedelta | float | None = None,
) -> list[tuple[PySessionInfo, bytes]]: ...
def try_receive_session(svc: PyService, session: _Session) -> tuple[PySessionInfo, bytes] | None: ...
def init_tracing(config: dict[str, Any] | None = None) -> Any:
    """Configures logging now; the result may be awaited (resolves to None).

    ``{"opentelemetry": {"enabled": True, "grpc": {"endpoint": ...}, "service_name": ...,
    "sampling_ratio": 0.01}}`` exports spans over OTLP/gRPC; ``sampling_ratio`` is the share of
    publishes that start a trace (default 0.01; 1.0 traces every message). ``traceparent`` is
    ordinary, user-visible metadata (W3C): receivers see it, and a sender that sets it puts the
    publish into its own trace.
    """

def shutdown_runtime() -> None:
    """Stops the native runtime (the package registers it with ``atexit``; not for direct use)."""

@final
class NodeRunner:
    """Nodes started by :func:`start_node` (stop them with :func:`stop_node`)."""

    @property
    def listening(self) -> list[str]:
        """Every data-plane address bound (``ip:port``)."""
    @property
    def metrics_endpoint(self) -> str | None:
        """The metrics address (``ip:port``), when metrics are served."""

async def start_node(
    config_yaml: str | None = None, endpoint: str | None = None, metrics: str | None = None
) -> NodeRunner:
    """Starts the nodes of a ``slim`` YAML configuration (its text), or one plaintext node on
    ``endpoint``: the same code as the ``slim`` binary, mesh routing included."""

async def stop_node(runner: NodeRunner) -> bool:
    """Stops the nodes; False when one did not finish within the drain timeout."""

async def node_info(config: dict[str, Any], max_routes: int = 1000, name_filter: str = "") -> str:
    """What the node at ``config`` (a client dict) knows, as JSON text (links, routes, mesh nodes,
    counters); see :func:`slim_bindings.node.node_info` for the parsed form."""

def _error_samples() -> list[tuple[str, BaseException]]:
    """One exception per core error variant (tests/python/test_errors.py); not part of the API."""
