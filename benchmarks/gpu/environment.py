"""Records what a GPU run ran on, for one backend, and checks it is usable.

Writes `frozenbn.demo.machine.environment_info()` (device, backend, versions,
load) plus the installed versions of every package the benchmarks import,
the backend's GPU settings (JAX's default backend, XLA flags, the compilation cache;
torch's CUDA, cuDNN and TF32 switches) and whether scikit-image, which
`gap.py --full` needs for its data, is there. Prints one line, and a WARNING line
for anything that would change what the benchmarks measure.

Exit status: 0; 3 with `--require-gpu` when the backend sees no GPU (the
run script then skips that backend's parts instead of timing a CPU).

Usage:
    KERAS_BACKEND=jax python benchmarks/gpu/environment.py OUT.json [--require-gpu]
"""

import importlib.metadata
import importlib.util
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common  # noqa: E402  (puts the checkout first on sys.path)

import keras  # noqa: E402

from frozenbn._report import write_json  # noqa: E402
from frozenbn.demo.machine import environment_info  # noqa: E402

DISTRIBUTIONS = (
    "namex", "optree", "jax", "jaxlib",
    "jax-cuda13-plugin", "jax-cuda12-plugin", "torch", "torchvision",
    "h5py", "ml-dtypes", "absl-py", "rich", "packaging", "matplotlib",
    "pillow", "scipy", "scikit-image", "imageio", "tifffile", "networkx",
    "lazy-loader",
)
"""Installed distributions worth recording beyond `environment_info`'s
(None where absent)."""

GAP_FULL_MODULES = ("skimage",)
"""What `gap.py --full` needs to build its 224x224 data."""


def versions() -> dict:
    out = {}
    for name in DISTRIBUTIONS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def backend_settings(backend: str) -> dict:
    """The switches that change a GPU timing, for the current backend."""
    if backend == "jax":
        import jax

        return {
            "default_backend": jax.default_backend(),
            "default_matmul_precision": str(
                jax.config.jax_default_matmul_precision),
            "compilation_cache_dir": os.environ.get(
                "JAX_COMPILATION_CACHE_DIR"),
            "XLA_FLAGS": os.environ.get("XLA_FLAGS"),
            "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get(
                "XLA_PYTHON_CLIENT_PREALLOCATE"),
        }
    if backend == "torch":
        import torch

        cuda = torch.cuda.is_available()
        return {
            "cuda_available": cuda,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "devices": [torch.cuda.get_device_name(i)
                        for i in range(torch.cuda.device_count())],
        }
    return {}


def main(argv=None) -> int:
    parser = _common.argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("out", help="JSON file to write")
    parser.add_argument("--require-gpu", action="store_true",
                        help="exit 3 when the backend sees no GPU")
    args = parser.parse_args(argv)
    backend = keras.config.backend()
    env = environment_info()
    env["packages"] = versions()
    env["backend_settings"] = backend_settings(backend)
    missing = [m for m in GAP_FULL_MODULES
               if importlib.util.find_spec(m) is None]
    env["gap_full_data_modules_missing"] = missing
    warnings = []
    if missing:
        warnings.append(
            f"{', '.join(missing)} missing: gap.py --full would fall back to "
            "the shipped 32x32 images (gap_seeds.py says so in its JSON)")
    if env["device_kind"] != "gpu":
        warnings.append(f"{backend} sees no GPU: it would time the CPU")
    env["warnings"] = warnings
    write_json(env, args.out)
    print(f"{backend} {env['backend_version']}: {env['device']} "
          f"({env['device_kind']}); keras {env['keras']}, "
          f"numpy {env['numpy']} -> {args.out}", flush=True)
    for warning in warnings:
        print(f"WARNING: {warning}", flush=True)
    if args.require_gpu and env["device_kind"] != "gpu":
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
