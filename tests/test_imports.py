"""The package's imports run the way the house is built: the library never
imports the demo or the command line, nor the package root; the demo uses
the library's public names and its I/O helpers (`_report`, `_images`); the
command line reaches the demo through `frozenbn.demo`'s public names; only
`frozenbn._keras_private` reads Keras's private API."""

import ast
import glob
import importlib
import os

import frozenbn
import frozenbn.demo
from tests import testing

PACKAGE = testing.PACKAGE
DEMO_MAY_USE = {"frozenbn._report", "frozenbn._images"}


def _imports(path, packages=("frozenbn",)):
    """`(module, name)` for every import in `path` of a module of
    `packages`; name None for `import m`."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, alias.name) for alias in node.names]
    return [(m, n) for m, n in found if m.split(".")[0] in packages]


def _target(module, name):
    """The module an import reaches: `from frozenbn import _walk` and `from
    frozenbn import demo` reach those modules, `from frozenbn import convert`
    the package root (which binds `convert` to the function)."""
    if name is not None:
        try:
            submodule = importlib.import_module(f"{module}.{name}")
        except ImportError:
            return module
        if getattr(importlib.import_module(module), name) is submodule:
            return submodule.__name__
    return module


def test_the_library_imports_neither_the_demo_nor_the_root():
    wrong = {}
    for path in testing.library_modules():
        for module, name in _imports(path):
            target = _target(module, name)
            if (target == "frozenbn" or target.startswith("frozenbn.demo")
                    or target == "frozenbn.cli"):
                wrong.setdefault(os.path.basename(path), []).append(target)
    assert not wrong, wrong


def test_the_demo_uses_public_names_and_the_io_helpers():
    wrong = {}
    for path in glob.glob(os.path.join(PACKAGE, "demo", "*.py")):
        for module, name in _imports(path):
            target = _target(module, name)
            private = any(part.startswith("_") for part in target.split("."))
            if target == "frozenbn" and name is not None:
                private = name.startswith("_") or not hasattr(frozenbn, name)
            if private and target not in DEMO_MAY_USE:
                wrong.setdefault(os.path.basename(path), []).append(
                    f"{module}:{name}")
    assert not wrong, wrong


def test_the_command_line_reaches_the_demo_through_its_public_names():
    used = [(module, name)
            for module, name in _imports(os.path.join(PACKAGE, "cli.py"))
            if _target(module, name).startswith("frozenbn.demo")]
    assert used  # the check below sees the imports
    for module, name in used:
        assert module in ("frozenbn", "frozenbn.demo"), module
        assert name == "demo" or name in frozenbn.demo.__all__, name


def test_only_the_backend_package_imports_a_backend_library():
    # `frozenbn._backend` holds all backend-specific code (tests/test_backend.py).
    importing = {}
    for path in testing.package_modules():
        for module, _ in _imports(path, ("tensorflow", "jax", "torch")):
            importing.setdefault(os.path.relpath(path, PACKAGE), set()).add(
                module)
    assert importing and all(
        path.startswith("_backend" + os.sep) for path in importing), importing


# Attributes with a leading underscore that are public API (namedtuple's).
_PUBLIC_UNDERSCORE = {"_asdict", "_replace", "_fields", "_make"}


def _private_reads(path, tree, own):
    """`"import keras.src..."` for each `keras.src` import in `path`, and
    `"line: text"` for each read of a `_private` attribute in its `tree` that
    frozenbn does not define itself (`own`), on `self` too (a Keras base
    class's private method)."""
    def private(name):
        return (name.startswith("_") and not name.startswith("__")
                and name not in _PUBLIC_UNDERSCORE and name not in own)

    found = [f"import {module}" for module, _ in _imports(path, ("keras",))
             if module.split(".")[:2] == ["keras", "src"]]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and private(node.attr):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr")
                and len(node.args) > 1
                and isinstance(node.args[1], ast.Constant)
                and isinstance(node.args[1].value, str)
                and private(node.args[1].value)):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_only_keras_private_reads_the_private_keras_api():
    paths = sorted(glob.glob(os.path.join(PACKAGE, "**", "*.py"),
                             recursive=True))
    trees = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            trees[path] = ast.parse(f.read())
    # What frozenbn defines: attributes it sets on `self`, its functions
    # and methods, and its modules' private names.
    own = {os.path.basename(path)[:-3] for path in paths}
    for tree in trees.values():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute)
                    and isinstance(node.ctx, ast.Store)
                    and isinstance(node.value, ast.Name)
                    and node.value.id == "self"):
                own.add(node.attr)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx,
                                                           ast.Store):
                own.add(node.id)
    reads = {os.path.relpath(path, PACKAGE): _private_reads(path, tree, own)
             for path, tree in trees.items()}
    assert len(reads.pop("_keras_private.py")) >= 10  # the check sees them
    assert not {path: found for path, found in reads.items() if found}
