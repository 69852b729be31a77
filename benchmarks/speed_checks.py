"""Exactness checks that `speed.py` reports beside its timings.

- `frozen_vs_stock`: the frozenbn model called with `training=True` (the
  path `fit()` takes) against stock Keras BN with `training=False`, for the
  whole model and for every BN layer;
- `fused_vs_frozen`: the `fuse`d model against the frozenbn model, both in
  training mode (the float32 rounding of a different order of operations);
- `folded_vs_stock`: the `fold`ed model against stock inference.
"""

import keras
import numpy as np

import frozenbn


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _max_rel(reference, other) -> dict:
    diff = float(np.max(np.abs(reference - other)))
    scale = float(np.max(np.abs(reference)))
    return {
        "max_abs_diff": diff,
        "max_rel_diff": diff / max(scale, 1e-30),
        "output_max_abs": scale,
    }


def frozen_vs_stock(stock: keras.Model, frozen: keras.Model, x) -> dict:
    """Max abs diff: frozenbn (training=True) vs stock Keras training=False."""
    ref = _np(stock(x, training=False))
    out = _np(frozen(x, training=True))
    out_inf = _np(frozen(x, training=False))
    model = _max_rel(ref, out)

    stock_bns = frozenbn._walk.batch_norm_layers(_backbone(stock))
    frozen_bns = frozenbn._walk.batch_norm_layers(_backbone(frozen))
    # Inputs of every BN layer in the stock model, one inference pass.
    stock_bb = _backbone(stock)
    sub = keras.Model(stock_bb.inputs, [bn.input for bn in stock_bns])
    inputs = sub(x, training=False)
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    per_layer, per_layer_rel, per_layer_inf = [], [], []
    for s_bn, f_bn, xin in zip(stock_bns, frozen_bns, inputs):
        a = _np(s_bn(xin, training=False))
        b = _np(f_bn(xin, training=True))
        c = _np(f_bn(xin, training=False))
        per_layer.append(float(np.max(np.abs(a - b))))
        per_layer_rel.append(per_layer[-1] / max(np.max(np.abs(a)), 1e-30))
        per_layer_inf.append(float(np.max(np.abs(a - c))))
    return {
        "note": "frozenbn called with training=True (the path fit() "
        "takes) and training=False, vs stock Keras BN training=False; "
        "rel = max abs diff / max abs stock output",
        "model_max_abs_diff": model["max_abs_diff"],
        "model_max_rel_diff": model["max_rel_diff"],
        "model_output_max_abs": model["output_max_abs"],
        "model_inference_max_abs_diff": float(np.max(np.abs(ref - out_inf))),
        "per_layer_max_abs_diff": float(max(per_layer, default=0.0)),
        "per_layer_max_rel_diff": float(max(per_layer_rel, default=0.0)),
        "per_layer_bit_exact": int(sum(d == 0.0 for d in per_layer)),
        "per_layer_inference_max_abs_diff": float(
            max(per_layer_inf, default=0.0)
        ),
        "num_bn_layers": len(per_layer),
    }


def fused_vs_frozen(frozen: keras.Model, x) -> dict:
    """The fused copy of `frozen` against it, training-mode outputs."""
    fused, report = frozenbn.fuse(frozen)
    result = _max_rel(_np(frozen(x, training=True)), _np(fused(x, training=True)))
    result.update(fused=len(report.pairs), left=len(report.left))
    return result


def folded_vs_stock(stock: keras.Model, folded: keras.Model, x) -> dict:
    return _max_rel(_np(stock(x, training=False)), _np(folded(x, training=False)))


def _backbone(model):
    # The BN layers live in the nested backbone model.
    return next(
        layer for layer in model.layers if isinstance(layer, keras.Model)
    )
