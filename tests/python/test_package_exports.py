"""The package exports every public native name. (The stubs are checked against the built module by
mypy.stubtest: `task python:typecheck`.)"""

from __future__ import annotations

import slim_bindings
from slim_bindings import _slim_bindings


def test_package_all_is_complete() -> None:
    exported = set(slim_bindings.__all__)
    for name in exported:
        assert hasattr(slim_bindings, name), name
    # build_info/build_profile are reached through get_build_info()/get_build_profile().
    internal = {"shutdown_runtime", "build_info", "build_profile"}
    public_native = {n for n in dir(_slim_bindings) if not n.startswith("_")} - internal
    assert public_native <= exported
