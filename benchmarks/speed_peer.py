"""The torchvision peer: ResNet50 with `FrozenBatchNorm2d` on the same device.

Eager PyTorch, NCHW, SGD, the same batch size and image size as the Keras
arms. `FrozenBatchNorm2d` keeps its affine parameters as buffers (not
trained), so it is the peer of Keras `trainable=False`; stock
`torch.nn.BatchNorm2d` is the peer of the stock arm.
"""

import speed_timing
from speed_arms import NUM_CLASSES


def time_torchvision(args) -> dict:
    try:
        import torch  # noqa: PLC0415
        import torchvision  # noqa: PLC0415
        from torchvision.ops.misc import FrozenBatchNorm2d  # noqa: PLC0415
    except ImportError as e:
        print(f"torchvision peer skipped: {e}")
        return {"skipped": f"torchvision not importable: {e}"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    x = torch.randn(
        args.batch_size, 3, args.image_size, args.image_size, device=device
    )
    y = torch.randint(0, NUM_CLASSES, (args.batch_size,), device=device)

    def make(norm_layer):
        kwargs = {} if norm_layer is None else {"norm_layer": norm_layer}
        net = torchvision.models.resnet50(
            weights=None, num_classes=NUM_CLASSES, **kwargs
        ).to(device)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()

        def run():
            for _ in range(args.steps):
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(x), y)
                loss.backward()
                opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
            loss.item()

        return run

    fns = {
        "torchvision_bn": make(None),
        "torchvision_frozen_bn2d": make(FrozenBatchNorm2d),
    }
    memory = {}
    for name, fn in fns.items():
        # The first call of each arm (its optimizer state is made then):
        # the CUDA allocator's peak while both networks are resident.
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        fn()
        memory[name] = (torch.cuda.max_memory_allocated() / 2**20
                        if device == "cuda" else None)
    speed_timing.warm_up(fns, args.warmup)
    arms = speed_timing.interleaved(
        fns, args.repeats, args.steps * args.batch_size
    )
    return {
        "device": device,
        "torchvision": torchvision.__version__,
        "note": __doc__.split("\n\n")[1].replace("\n", " ").strip(),
        "arms": arms,
        "device_peak_mb": memory,
        "memory_note": "torch.cuda.max_memory_allocated over each arm's "
        "first call, both peer networks resident (None on a CPU)",
        "ratios_vs_torchvision_bn": speed_timing.ratios(arms, "torchvision_bn"),
    }
