"""Version and build information of the native module."""

from __future__ import annotations

from ._slim_bindings import __version__ as _native_version
from ._slim_bindings import build_info as _build_info
from ._slim_bindings import build_profile as _build_profile

__all__ = ["get_build_info", "get_build_profile", "get_version"]


def get_version() -> str:
    """The package version (PEP 440), e.g. ``"0.1.0"``."""
    return _native_version


def get_build_profile() -> str:
    """``"debug"`` or ``"release"``."""
    return _build_profile


def get_build_info() -> str:
    """Version, build date, git SHA and profile, one ``Key:\\tvalue`` line each."""
    return _build_info
