"""slim_bindings: SLIM (Secure Low-latency Interactive Messaging) for Python.

Start with :class:`Slim` (one local app) and :class:`PySessionConfiguration`; the lower-level
functions take a :class:`PyService`. Every error derives from :class:`SlimError`.
"""

from __future__ import annotations

import atexit

from ._logging import disable_logging, enable_logging
from ._slim_bindings import (
    SESSION_UNSPECIFIED,
    PyAlgorithm,
    PyIdentityProvider,
    PyIdentityVerifier,
    PyKey,
    PyKeyData,
    PyKeyFormat,
    PyName,
    PyService,
    PySessionConfiguration,
    PySessionInfo,
    PySessionType,
    connect,
    create_pyservice,
    create_session,
    delete_session,
    disconnect,
    get_session_config,
    init_tracing,
    invite,
    publish,
    publish_many,
    receive,
    receive_new_session,
    receive_session,
    receive_session_many,
    remove,
    remove_route,
    run_server,
    run_server_bound,
    set_default_session_config,
    set_route,
    set_session_config,
    stop_server,
    subscribe,
    try_receive_session,
    unsubscribe,
)
from ._slim_bindings import shutdown_runtime as _shutdown_runtime
from .errors import (
    AuthenticationError,
    ConfigurationError,
    InviteError,
    MessageLostError,
    MessageTooLargeError,
    MlsError,
    NoRouteError,
    SendBufferFullError,
    SessionClosedError,
    SessionNotFoundError,
    SlimConnectionError,
    SlimError,
    SLIMTimeoutError,
)
from .node import NodeRunner, format_node_info, node_info, start_node, stop_node
from .slim import Slim
from .version import get_build_info, get_build_profile, get_version

__version__: str = get_version()

# Stop the Rust runtime's threads before the interpreter finalizes (see src/python/runtime.rs).
atexit.register(_shutdown_runtime)

__all__ = [
    "SESSION_UNSPECIFIED",
    "AuthenticationError",
    "ConfigurationError",
    "InviteError",
    "MessageLostError",
    "MessageTooLargeError",
    "MlsError",
    "NoRouteError",
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
    "SLIMTimeoutError",
    "SendBufferFullError",
    "SessionClosedError",
    "SessionNotFoundError",
    "Slim",
    "SlimConnectionError",
    "SlimError",
    "__version__",
    "connect",
    "create_pyservice",
    "create_session",
    "delete_session",
    "disable_logging",
    "disconnect",
    "enable_logging",
    "format_node_info",
    "get_build_info",
    "get_build_profile",
    "get_session_config",
    "get_version",
    "init_tracing",
    "invite",
    "node_info",
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
    "start_node",
    "stop_node",
    "stop_server",
    "subscribe",
    "try_receive_session",
    "unsubscribe",
]
