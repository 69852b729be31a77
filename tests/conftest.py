import keras
import numpy as np
import pytest

keras.config.disable_traceback_filtering()


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.config.backend()}"


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1337)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
