"""`frozenbn._backend`: the one place where the library's code differs by
backend. No other library module asks Keras which backend runs (nor imports
a backend's library: tests/test_imports.py; the demo, an application beside
the library, describes the machine it runs on), and each backend module
redefines only names of the interface (`generic.__all__`), so a misspelt
override cannot go unused."""

import importlib
import inspect
import os

import keras
import pytest

from frozenbn import _backend
from frozenbn._backend import generic
from tests import testing

def test_only_the_backend_package_asks_which_backend_runs():
    asking = []
    for path in testing.package_modules():
        with open(path, encoding="utf-8") as f:
            if "config.backend()" in f.read():
                asking.append(os.path.relpath(path, testing.PACKAGE))
    assert asking == [os.path.join("_backend", "__init__.py")]


def test_the_running_backend_has_its_module():
    name = keras.config.backend()
    assert _backend.native.__name__ == f"frozenbn._backend.{name}"
    assert set(generic.__all__) <= set(dir(_backend.native))


@pytest.mark.parametrize("name", ["jax", "tensorflow", "torch"])
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
