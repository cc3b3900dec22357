"""Rust log records in Python's :mod:`logging`.

The package only installs a :class:`logging.NullHandler` on the ``slim_bindings`` logger, so
nothing is printed unless the application configures logging. To receive the Rust core's records
there, call :func:`enable_logging` (or ``init_tracing({"log_level": ..., "python_logging": True})``,
which is the same). Levels map ERROR→40, WARN→30, INFO→20, DEBUG→10, TRACE→5; each record carries
the Rust module path as ``record.rust_target``. Records are handed over by a background thread
through a bounded queue: logging never blocks the Rust side, and a flood beyond the queue is
dropped rather than slowing messaging down.
"""

from __future__ import annotations

import logging

from ._slim_bindings import init_tracing

LOGGER_NAME = "slim_bindings"

logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())


def enable_logging(level: str = "info") -> None:
    """Send Rust log records at ``level`` and above (trace/debug/info/warn/error) to the
    ``slim_bindings`` logger instead of stderr. Callable again to change the level."""
    init_tracing({"log_level": level, "python_logging": True})


def disable_logging(level: str = "info") -> None:
    """Send Rust log records back to stderr (at ``level``)."""
    init_tracing({"log_level": level, "python_logging": False})
