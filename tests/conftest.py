import keras
import numpy as np
import pytest

from tests.testing import worker_scope

keras.config.disable_traceback_filtering()


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.config.backend()}"


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


@pytest.fixture
def rng():
    return np.random.default_rng(0)
