"""Seconds per training step of the mini model's UNet: a plain diffusers UNet2DConditionModel forward+backward
against the same UNet inside RefOnlyNoisedUNet (condition pass + main pass with reference attention), side by side
in one process, and the same pair without attention at the top level (what that level costs).

    .venv/bin/python bench/mini_step.py                 # batch 8 grids of 48x32 latents (64 px views), 2 threads
    .venv/bin/python bench/mini_step.py --threads 1 --repeats 5
    .venv/bin/python bench/mini_step.py --device cuda --repeats 10
    .venv/bin/python bench/mini_step.py --variants --repeats 7   # the training step's speed-ups, side by side
    .venv/bin/python bench/mini_step.py --view-sizes 64 128      # the same steps on 64 px and 128 px views

With --variants it times the mini model's training step (RefOnlyNoisedUNet, clean reference, AdamW) as
`train_unet` runs it, against the same step with bfloat16 autocast, channels-last memory, a fused AdamW,
torch.compile, and their combination, one round of every variant after another so that drift hits all alike;
each variant's loss on the same first batch is printed beside the float32 one.
"""
import argparse, time
import torch

from mvsk.models import MINI_CONFIG, build_components, SCHEDULER_CONFIG
from mvsk.unet import RefOnlyNoisedUNet


def unet_of(top_attention: bool):
    cfg = dict(MINI_CONFIG)
    unet = build_components(0, cfg)["unet"]
    if top_attention: return unet
    from diffusers import UNet2DConditionModel
    c = dict(unet.config)
    c["down_block_types"] = ("DownBlock2D",) + tuple(c["down_block_types"][1:])
    c["up_block_types"] = tuple(c["up_block_types"][:-1]) + ("UpBlock2D",)
    return UNet2DConditionModel.from_config(c)


def step_seconds(net, ref: bool, batch: int, repeats: int, device: str = "cpu", view_size: int = None) -> float:
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    h = (view_size or MINI_CONFIG["view_size"]) // 4
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(batch, 4, 3 * h, 2 * h, generator=g), torch.randn(batch, 4, h, h, generator=g)
    e, t = torch.randn(batch, 77, MINI_CONFIG["dim"], generator=g), torch.randint(0, 1000, (batch,), generator=g)
    x, c, e, t = (v.to(device) for v in (x, c, e, t))
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        out = (net(x, t, e, cross_attention_kwargs=dict(cond_lat=c)) if ref else net(x, t, e)).sample
        out.square().mean().backward(); opt.step(); opt.zero_grad(set_to_none=True)
        if device != "cpu": torch.cuda.synchronize(device)
        if i: times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


VARIANTS = ("fp32", "bf16", "channels_last", "fused_adamw", "bf16+channels_last+fused", "compile")


def _variant(name: str, device: str):
    "-> (RefOnlyNoisedUNet, optimiser, autocast dtype or None) for one speed-up variant, from the same initial weights."
    from diffusers import DDPMScheduler, EulerAncestralDiscreteScheduler
    torch.manual_seed(0)
    unet = unet_of(True).to(device)
    if "channels_last" in name: unet = unet.to(memory_format=torch.channels_last)
    net = RefOnlyNoisedUNet(unet, DDPMScheduler.from_config(SCHEDULER_CONFIG), EulerAncestralDiscreteScheduler.from_config(SCHEDULER_CONFIG),
                            n_tokens=1, reference_latent="clean").train()
    opt = torch.optim.AdamW(unet.parameters(), 1e-4, fused="fused" in name)
    if name == "compile": net.unet = torch.compile(unet, dynamic=False)   # two static graphs: condition and main pass
    return net, opt, torch.bfloat16 if "bf16" in name else None


def variant_rounds(batch: int, repeats: int, device: str = "cpu") -> list:
    "Median seconds per training step and the first step's loss of every variant in VARIANTS, timed round-robin."
    h = MINI_CONFIG["view_size"] // 4
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(batch, 4, 3 * h, 2 * h, generator=g), torch.randn(batch, 4, h, h, generator=g)
    e, t = torch.randn(batch, 77, MINI_CONFIG["dim"], generator=g), torch.randint(0, 1000, (batch,), generator=g)
    x, c, e, t = (v.to(device) for v in (x, c, e, t))
    built = {n: _variant(n, device) for n in VARIANTS}
    times, first = {n: [] for n in VARIANTS}, {}

    def step(name):
        net, opt, dt = built[name]
        with torch.autocast(torch.device(device).type, dtype=dt or torch.float32, enabled=dt is not None):
            out = net(x, t, e, cross_attention_kwargs=dict(cond_lat=c)).sample
        loss = out.float().square().mean()
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    for name in VARIANTS:                                  # warm-up (and compilation) outside the timing
        first[name] = step(name); step(name)
    for _ in range(repeats):
        for name in VARIANTS:
            t0 = time.perf_counter(); step(name)
            if device != "cpu": torch.cuda.synchronize(device)
            times[name].append(time.perf_counter() - t0)
    med = {n: sorted(v)[len(v) // 2] for n, v in times.items()}
    return [dict(variant=n, seconds=med[n], ratio=med["fp32"] / med[n], first_loss=first[n]) for n in VARIANTS]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--variants", action="store_true", help="time the training step's speed-ups instead")
    ap.add_argument("--view-sizes", type=int, nargs="+", default=[MINI_CONFIG["view_size"]], help="view sides in px (a 4x VAE latent)")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    if a.variants:
        print(f"torch {torch.__version__}, {a.device}, {torch.get_num_threads()} threads, batch {a.batch}, median of {a.repeats} rounds")
        print("| variant | s/step | speed-up vs fp32 | loss of the first step |")
        print("|---|---|---|---|")
        for r in variant_rounds(a.batch, a.repeats, a.device):
            print(f"| {r['variant']} | {r['seconds']:.3f} | {r['ratio']:.2f}x | {r['first_loss']:.5f} |")
        return
    from diffusers import DDPMScheduler, EulerAncestralDiscreteScheduler
    print(f"torch {torch.__version__}, {a.device}, {torch.get_num_threads()} threads, batch {a.batch}, median of {a.repeats}")
    print("| UNet | view | parameters | plain diffusers (s/step) | RefOnlyNoisedUNet, clean reference (s/step) | ratio | vs the first view size |")
    print("|---|---|---|---|---|---|---|")
    first = {}
    for S in a.view_sizes:
        for top in (True, False):
            unet = unet_of(top)
            n = sum(p.numel() for p in unet.parameters()) / 1e6
            plain = step_seconds(unet, False, a.batch, a.repeats, a.device, S)
            net = RefOnlyNoisedUNet(unet, DDPMScheduler.from_config(SCHEDULER_CONFIG), EulerAncestralDiscreteScheduler.from_config(SCHEDULER_CONFIG),
                                    n_tokens=1, reference_latent="clean").train()
            ref = step_seconds(net, True, a.batch, a.repeats, a.device, S)
            first.setdefault(top, ref)
            print(f"| mini{'' if top else ', no attention at the top level'} | {S} px | {n:.2f} M | {plain:.3f} | {ref:.3f} | "
                  f"{ref / plain:.2f} | {ref / first[top]:.2f}x |")


if __name__ == "__main__":
    main()
