"""The rows of docs/errors.md that no other test module asserts.

Each test triggers the misuse the row names and matches the message the
row quotes.
"""

import keras
import numpy as np
import pytest

import frozenbn
from frozenbn.callbacks import FreezeBatchNorm
from frozenbn.callbacks import PreciseBN
from frozenbn.cli import main



def _model():
    return keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(3),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(1, activation="sigmoid"),
    ])


def _xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    return x, (x[:, :1] > 0).astype("float32")


def test_audit_loss_errors():
    with pytest.raises(ValueError, match=r"Unknown `loss`: 'nope'"):
        frozenbn.audit(_model(), _xy(), loss="nope")
    with pytest.raises(ValueError, match=r"Unknown `loss`: 3"):
        frozenbn.audit(_model(), _xy(), loss=3)


@pytest.mark.parametrize("tool", [frozenbn.audit, frozenbn.recalibrate])
def test_steps_and_batch_size_errors(tool):
    x, _ = _xy()
    with pytest.raises(ValueError, match=r"`steps` must be a positive int"):
        tool(_model(), x, steps=0)
    with pytest.raises(TypeError, match=r"`batch_size` must be a positive"):
        tool(_model(), x, batch_size="32")


@pytest.mark.parametrize("tool", [frozenbn.audit, frozenbn.recalibrate])
def test_steps_beyond_the_data_warn_and_use_what_there_is(tool):
    x, _ = _xy()  # 8 samples: 2 batches of 4
    model, whole = _model(), _model()
    whole.set_weights(model.get_weights())
    with pytest.warns(UserWarning, match=r"^`x` ran out of data after 2 of "
                      r"the steps=5 batches asked for; only those 2 were "
                      r"used\.$"):
        result = tool(model, x, batch_size=4, steps=5, verbose=0)
    expected = tool(whole, x, batch_size=4, verbose=0)
    if tool is frozenbn.recalibrate:
        assert result == expected == 1
        for a, b in zip(model.weights, whole.weights):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                          keras.ops.convert_to_numpy(b))
    else:
        assert (result.steps, result.samples) == (expected.steps, 8) == (2, 8)
        assert result.layers[0].score == expected.layers[0].score


def test_precise_bn_warns_when_the_data_runs_out_before_steps():
    x, y = _xy()
    model = _model()
    model.compile("sgd", "mse")
    with pytest.warns(UserWarning, match=r"^`x` ran out of data after 2 of "
                      r"the steps=5 batches"):
        model.fit(x, y, epochs=1, verbose=0,
                  callbacks=[PreciseBN(x, batch_size=4, steps=5)])


def test_callback_errors():
    with pytest.raises(ValueError, match=r"`epoch` must be an int >= 0"):
        FreezeBatchNorm(epoch=-1)
    with pytest.raises(TypeError, match=r"`include` must be a callable"):
        FreezeBatchNorm(include="bn")
    with pytest.raises(TypeError, match=r"`x` is None"):
        PreciseBN(None)
    with pytest.raises(ValueError, match=r"`every_n_epochs` must be a pos"):
        PreciseBN(np.zeros((2, 3)), every_n_epochs=0)


@keras.saving.register_keras_serializable(package="test_errors_doc")
class _Scale(keras.layers.Layer):
    """Its config forgets `size`, so a copy rebuilds other weights."""

    def __init__(self, size=1, **kwargs):
        super().__init__(**kwargs)
        self.size = size

    def build(self, input_shape):
        self.w = self.add_weight(shape=(self.size,), initializer="ones")

    def call(self, x):
        return x * self.w


def test_convert_runtime_error_when_a_config_does_not_rebuild():
    model = keras.Sequential([
        keras.Input((3,)), _Scale(3), keras.layers.BatchNormalization(),
    ])
    with pytest.raises(RuntimeError, match=r"did not reproduce its layers"):
        frozenbn.convert(model)
    # In place works: nothing is rebuilt.
    assert frozenbn.convert(model, inplace=True) is model


def test_cli_output_refusals(tmp_path, capsys):
    path = tmp_path / "m.keras"
    _model().save(path)
    assert main(["convert", str(path), str(tmp_path / "no" / "o.keras")]) == 1
    assert "output folder does not exist" in capsys.readouterr().err
    assert main(["convert", str(path), str(path)]) == 1
    assert "refusing to overwrite the input file" in capsys.readouterr().err
