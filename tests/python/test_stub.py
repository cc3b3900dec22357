"""The hand-kept stub `_slim_bindings.pyi` must describe exactly what the native module has."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import slim_bindings
from slim_bindings import _slim_bindings

STUB = Path(slim_bindings.__file__).with_name("_slim_bindings.pyi")


def _stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text())


def _stub_names() -> set[str]:
    names: set[str] = set()
    for node in _stub_tree().body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") or n == "__version__"}


def test_stub_lists_every_public_native_name() -> None:
    native = {n for n in dir(_slim_bindings) if not n.startswith("_") or n == "__version__"}
    assert native == _stub_names()


def test_stub_signatures_match() -> None:
    """Parameter names (and so keyword calls) agree between stub and module."""
    for node in _stub_tree().body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            params = [a.arg for a in node.args.args]
            native = getattr(_slim_bindings, node.name)
            sig = inspect.signature(native)
            assert list(sig.parameters) == params, node.name


def test_package_all_is_complete() -> None:
    exported = set(slim_bindings.__all__)
    for name in exported:
        assert hasattr(slim_bindings, name), name
    # build_info/build_profile are reached through get_build_info()/get_build_profile().
    internal = {"shutdown_runtime", "build_info", "build_profile"}
    public_native = {n for n in dir(_slim_bindings) if not n.startswith("_")} - internal
    assert public_native <= exported
