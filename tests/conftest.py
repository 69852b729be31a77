import os

# Under pytest-xdist, each worker gets its share of the cores for the
# OpenMP thread pools (torch's CPU kernels): with every worker spinning
# one thread per core, a torch run of the suite on 2 cores with `-n 2`
# measured 1.5x slower. Set before the backend is imported; an explicit
# OMP_NUM_THREADS wins.
# The cores are those this process may run on (a container's CPU set),
# not the host's count.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CORES = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
              else os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _CORES // _WORKERS)))

import keras
import numpy as np
import pytest

from tests.testing import worker_scope

keras.config.disable_traceback_filtering()


def pytest_addoption(parser):
    parser.addoption(
        "--full", action="store_true", default=False,
        help="also run the `full` tier: every model of the sweep and the "
        "long scenario tests (`bash .ci/run full` runs it on every backend)",
    )


def pytest_report_header(config):
    tier = "full" if config.getoption("--full") else "every push"
    return f"keras {keras.__version__}, backend {keras.config.backend()}, tier {tier}"


def pytest_collection_modifyitems(config, items):
    # The `full` tier is skipped with its reason, never silently, unless
    # `--full` asks for it (keras-hub gates its large tests the same way).
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="full tier: run with --full")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    # pytest-xdist's own `xdist_group` marks do not group under pytest 9.2
    # (xdist 3.8 renames `item._nodeid`, which pytest 9.2 no longer reads),
    # so plain `-n N` groups by `worker_scope`, from the node ids the
    # workers report; an explicit other `--dist` mode keeps xdist's.
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return worker_scope(nodeid)

    return SharedFixtureScheduling(config, log)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1337)
    yield
    keras.config.set_dtype_policy("float32")
    # A name scope left open (Keras's TensorFlow backend leaves one when a
    # layer's name starts with "_") prefixes every variable path created
    # after it, in whichever test runs next in this process.
    from keras.src.backend.common import global_state

    stack = global_state.get_global_attribute("name_scope_stack")
    if stack:
        names = [scope.name for scope in stack]
        stack.clear()
        pytest.fail(f"the test left Keras name scopes open: {names}")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
