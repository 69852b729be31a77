"""`frozenbn._backend`: the one place where the library's code differs by
backend. No other library module asks Keras which backend runs or imports a
backend's library (the demo, an application beside the library, describes
the machine it runs on), and each backend module redefines only names of
the interface (`generic.__all__`), so a misspelt override cannot go unused."""

import ast
import glob
import importlib
import inspect
import os

import keras
import pytest

from frozenbn import _backend
from frozenbn._backend import generic
from tests import testing

PACKAGE = os.path.join(testing.REPO, "frozenbn")
BACKEND_LIBRARIES = {"tensorflow", "jax", "torch"}


def _sources():
    for path in glob.glob(os.path.join(PACKAGE, "**", "*.py"), recursive=True):
        if os.path.relpath(path, PACKAGE).startswith("demo" + os.sep):
            continue
        with open(path, encoding="utf-8") as f:
            yield os.path.relpath(path, PACKAGE), f.read()


def test_only_the_backend_package_asks_which_backend_runs():
    asking = [path for path, text in _sources()
              if "config.backend()" in text]
    assert asking == [os.path.join("_backend", "__init__.py")]


def test_only_the_backend_package_imports_a_backend_library():
    importing = {}
    for path, text in _sources():
        for node in ast.walk(ast.parse(text)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in BACKEND_LIBRARIES:
                    importing.setdefault(path, set()).add(name)
    assert importing and all(
        path.startswith("_backend" + os.sep) for path in importing), importing


def test_the_running_backend_has_its_module():
    name = keras.config.backend()
    assert _backend.native.__name__ == f"frozenbn._backend.{name}"
    assert set(generic.__all__) <= set(dir(_backend.native))


@pytest.mark.parametrize("name", sorted(BACKEND_LIBRARIES))
def test_a_backend_module_redefines_only_the_interface(name):
    pytest.importorskip(name)
    module = importlib.import_module(f"frozenbn._backend.{name}")
    public = {
        key for key, value in vars(module).items()
        if not key.startswith("_") and not inspect.ismodule(value)
        and (getattr(value, "__module__", module.__name__) == module.__name__
             or key.isupper())
    }
    assert public and public <= set(generic.__all__), public - set(
        generic.__all__)
