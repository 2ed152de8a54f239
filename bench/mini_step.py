"""Seconds per training step of the mini model's UNet: a plain diffusers UNet2DConditionModel forward+backward
against the same UNet inside RefOnlyNoisedUNet (condition pass + main pass with reference attention), side by side
in one process, and the same pair without attention at the top level (what that level costs).

    .venv/bin/python bench/mini_step.py                 # batch 8 grids of 48x32 latents (64 px views), 2 threads
    .venv/bin/python bench/mini_step.py --threads 1 --repeats 5
    .venv/bin/python bench/mini_step.py --device cuda --repeats 10
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


def step_seconds(net, ref: bool, batch: int, repeats: int, device: str = "cpu") -> float:
    net.to(device)
    opt = torch.optim.AdamW(net.parameters(), 1e-4)
    h = MINI_CONFIG["view_size"] // 4
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    from diffusers import DDPMScheduler, EulerAncestralDiscreteScheduler
    print(f"torch {torch.__version__}, {a.device}, {torch.get_num_threads()} threads, batch {a.batch}, median of {a.repeats}")
    print("| UNet | parameters | plain diffusers (s/step) | RefOnlyNoisedUNet, clean reference (s/step) | ratio |")
    print("|---|---|---|---|---|")
    for top in (True, False):
        unet = unet_of(top)
        n = sum(p.numel() for p in unet.parameters()) / 1e6
        plain = step_seconds(unet, False, a.batch, a.repeats, a.device)
        net = RefOnlyNoisedUNet(unet, DDPMScheduler.from_config(SCHEDULER_CONFIG), EulerAncestralDiscreteScheduler.from_config(SCHEDULER_CONFIG),
                                n_tokens=1, reference_latent="clean").train()
        ref = step_seconds(net, True, a.batch, a.repeats, a.device)
        print(f"| mini{'' if top else ', no attention at the top level'} | {n:.2f} M | {plain:.3f} | {ref:.3f} | {ref / plain:.2f} |")


if __name__ == "__main__":
    main()
