"""torch: native batch-norm kernels, steps eager under `torch.no_grad()`.

Frozen BN gets its gradient from `native_batch_norm_backward` (one pass);
a statistics pass takes its batch moments from torch's training-mode batch
norm (running buffers with `momentum=1` hold them, as fvcore reads them)
and runs eagerly: `torch.compile` takes minutes on a CPU.
"""

import functools

import torch

from frozenbn._backend import generic
from frozenbn._backend.generic import *  # noqa: F401,F403 (the defaults)


def records_gradients() -> bool:
    # Off under `torch.no_grad()`, as in Keras's `predict` and `evaluate`.
    return torch.is_grad_enabled()


def frozen_batch_norm(x, gamma, beta, mean, variance, axis, epsilon, layout):
    return generic.frozen_batch_norm(
        x, gamma, beta, mean, variance, axis, epsilon, layout,
        lambda *args: _function().apply(*args),
    )


@functools.lru_cache(maxsize=None)
def _function():
    """The `torch.autograd.Function` of a frozen BN (built once, lazily)."""

    class FrozenBatchNorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, forward, x, gamma, beta, mean, variance, epsilon,
                    layout):
            ctx.save_for_backward(x, gamma, mean, variance)
            ctx.epsilon, ctx.layout = epsilon, layout
            return forward(x, gamma, beta, mean, variance)

        @staticmethod
        def backward(ctx, dy):
            x, gamma, mean, variance = ctx.saved_tensors
            shape = x.shape
            if ctx.layout == "last":
                # A contiguous (..., C) tensor is a free (N, C) view: the
                # layout torch's batch norm takes, channels at dim 1.
                x = x.reshape(-1, shape[-1])
                dy = dy.reshape(-1, shape[-1])
            # CUDA's kernel asserts that the saved statistics are given
            # even in inference mode (and reads them when they are not
            # empty): pass the moving ones, as the forward used them.
            dx, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
                dy,
                x,
                gamma,
                mean,
                variance,
                mean,
                torch.rsqrt(variance + ctx.epsilon),
                False,
                ctx.epsilon,
                list(ctx.needs_input_grad[1:4]),
            )
            if dx is not None:
                dx = dx.reshape(shape)
            return None, dx, dgamma, dbeta, None, None, None, None

    return FrozenBatchNorm


def fused_normalization(x, axis, gamma, beta, epsilon):
    moved = torch.movedim(x, axis, 1)
    channels = moved.shape[1]
    count = moved.numel() // max(channels, 1)
    if count < 2:
        return None
    mean = torch.zeros(channels, dtype=x.dtype, device=x.device)
    var = torch.ones(channels, dtype=x.dtype, device=x.device)
    outputs = torch.nn.functional.batch_norm(
        moved, mean, var, weight=gamma, bias=beta, training=True,
        momentum=1.0, eps=epsilon,
    )
    var = var * ((count - 1) / count)
    return torch.movedim(outputs, 1, axis), mean, var, count


def no_grad():
    return torch.no_grad()
