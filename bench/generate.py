"""Per-step time of each fusion strategy relative to `none`, measured side by side in one process, and the
cost of refreshing the keypoint maps every step (`guidance_every=1`).

One "step" is what `mvsk.pipeline.generate` does per denoising step: Zero123++'s two UNet passes (condition
write + main read) on a CFG batch [uncond, cond], with the strategy's fusion in the main pass's
cross-attention; the fusion's maps are fixed (computed once), so the strategy rows exclude the keypoint pass.
The `+ keypoint pass` rows add what a refresh costs: `forward_sk` on the six view latents of the x0 grid
(all T tokens, early exit), as `generate` runs it with `guidance_every=1`; `guidance_every=n` costs
the strategy row plus 1/n of the keypoint pass. Variants are timed round-robin (one of each per round,
after a warm-up round), so a load change on the machine hits all of them alike; the median and the minimum
over the rounds are reported, with the ratio of the minima (the least disturbed by other processes).

    .venv/bin/python bench/generate.py                          # the tiny model (CPU)
    .venv/bin/python bench/generate.py --configs tiny medium    # + an SD2-layout UNet with reduced channels
    .venv/bin/python bench/generate.py --device cuda --dtype float16 --configs sd2   # the SD2-size UNet (866 M)
    .venv/bin/python bench/generate.py --memory                 # + peak memory per variant, each in its own process
"""
import argparse, json, math, statistics, sys, time

CONFIGS = {
    # name: UNet (None = the tiny Zero123++ model of mvsk.models), per-view latent side, tokens T, map res, K
    "tiny": dict(unet=None, latent=16, tokens=64, map_res=32, k=16),
    "medium": dict(unet=dict(channels=(64, 128, 256, 256), heads=(5, 10, 20, 20), dim=1024), latent=40, tokens=100, map_res=64, k=16),
    "sd2": dict(unet=dict(channels=(320, 640, 1280, 1280), heads=(5, 10, 20, 20), dim=1024), latent=40, tokens=500, map_res=128, k=16),
}
STRATEGY_ORDER = ("none", "concat", "hierarchical", "spatial", "plan_spatial", "plan_blend", "concat_rel", "hierarchical_rel")


def build(name, device, dtype):
    "-> RefOnlyNoisedUNet for a config (random UNet weights except for `tiny`)."
    import torch
    from mvsk.attention import SKSettings
    from mvsk.unet import RefOnlyNoisedUNet
    cfg = CONFIGS[name]
    sk = SKSettings(map_res=cfg["map_res"])
    if cfg["unet"] is None:
        from mvsk.models import load_zero123plus, tiny_zero123plus
        comp = load_zero123plus(tiny_zero123plus(seed=0), dtype=dtype, device=device)
        return RefOnlyNoisedUNet.from_components(comp, n_tokens=cfg["tokens"], sk=sk).eval()
    from diffusers import EulerAncestralDiscreteScheduler
    from mvsk.models import SCHEDULER_CONFIG
    from sk_pass import build as build_unet          # one SD2-layout UNet builder for both benchmarks
    unet, train_s, _ = build_unet(dict(latent=cfg["latent"], **cfg["unet"]), device, dtype)
    val = EulerAncestralDiscreteScheduler.from_config(SCHEDULER_CONFIG, timestep_spacing="trailing")
    return RefOnlyNoisedUNet(unet, train_s, val, n_tokens=cfg["tokens"], sk=sk).to(device).eval()


def setup(name, device, dtype_name, steps) -> tuple:
    "-> (variants: name -> callable running one step, sync) for a config."
    import torch
    from mvsk.fusion import KeypointFusion, HierarchicalGates, STRATEGIES
    from mvsk.pipeline import keypoint_maps
    dtype = getattr(torch, dtype_name)
    cfg = CONFIGS[name]
    model = build(name, device, dtype)
    L, D = cfg["latent"], model.unet.config.cross_attention_dim
    g = torch.Generator(device=device).manual_seed(0)
    sample = torch.randn(2, 4, 3 * L, 2 * L, generator=g, device=device, dtype=dtype)
    encoder_hidden_states = torch.randn(2, 77, D, generator=g, device=device, dtype=dtype)
    cond_lat = torch.randn(2, 4, L, L, generator=g, device=device, dtype=dtype)
    emb = model.tokens.embeddings.detach()
    sel = torch.arange(cfg["k"], device=device)
    sched = model.val_sched
    sched.set_timesteps(steps, device=device)
    t = sched.timesteps[steps // 3]
    sched.scale_model_input(sample, t)                     # sets the step index, as the sampling loop does
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def refresh():
        return keypoint_maps(model, sample[1:].float(), cond_lat[1:], encoder_hidden_states[1:], emb, sel, 0, g)

    with torch.no_grad():
        maps = refresh()
    gates = HierarchicalGates.for_model(model, gamma=math.atanh(0.3)).to(device)   # a non-zero gate: the residual is computed and used
    fusions = {s: None if s == "none" else KeypointFusion(s, emb[sel], maps, gates=gates if STRATEGIES[s].uses_gates else None)
               for s in STRATEGY_ORDER}

    def main_pass(fusion):
        return model(sample, t, encoder_hidden_states, cross_attention_kwargs=dict(cond_lat=cond_lat, fusion=fusion, generator=g)).sample

    def guided_step(s):
        fusions[s].set_maps(refresh())
        return main_pass(fusions[s])

    variants = {s: (lambda s=s: main_pass(fusions[s])) for s in STRATEGY_ORDER}
    variants["keypoint pass alone"] = refresh
    for s in ("concat", "hierarchical", "spatial"):
        variants[f"{s} + keypoint pass (guidance_every=1)"] = lambda s=s: guided_step(s)
    return variants, sync


def bench_config(name, device, dtype_name, repeats, steps):
    import torch
    variants, sync = setup(name, device, dtype_name, steps)
    times = {v: [] for v in variants}
    with torch.no_grad():
        for rnd in range(repeats + 1):                     # round 0 warms up and is not counted
            for v, fn in variants.items():
                sync(); t0 = time.perf_counter(); fn(); sync()
                if rnd: times[v].append(time.perf_counter() - t0)
    med = {v: statistics.median(ts) for v, ts in times.items()}
    low = {v: min(ts) for v, ts in times.items()}
    return [dict(config=name, variant=v, seconds=med[v], ratio=med[v] / med["none"], min_seconds=low[v],
                 min_ratio=low[v] / low["none"], device=device, dtype=dtype_name) for v in variants]


def _peak_one(name, variant, device, dtype_name, steps, q):
    "In its own process: set up, run `variant` twice, report peak RSS (CPU) or peak allocated memory (CUDA)."
    import resource, torch
    variants, sync = setup(name, device, dtype_name, steps)
    if device.startswith("cuda"): torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        for _ in range(2): variants[variant](); sync()
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    q.put(peak / 2**30)


def peak_memory(name, device, dtype_name, steps) -> dict:
    "Peak memory of each variant, each in a fresh process (CPU: the whole process's RSS, model included)."
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    out = {}
    for v in [*STRATEGY_ORDER, "keypoint pass alone"]:
        q = ctx.Queue()
        p = ctx.Process(target=_peak_one, args=(name, v, device, dtype_name, steps, q))
        p.start(); p.join()
        if p.exitcode != 0: raise SystemExit(f"{name}/{v} failed with exit code {p.exitcode}")
        out[v] = q.get()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["tiny"], choices=list(CONFIGS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=5, help="timed rounds (one of each variant per round)")
    ap.add_argument("--steps", type=int, default=75, help="sampling steps the scheduler is set to (the step timed is at 1/3)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--memory", action="store_true", help="also the peak memory of each variant, each in its own process")
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args(argv)
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    rows = []
    print(f"| config | variant | s / step (median of {a.repeats}) | x none | s / step (min) | x none (min) |")
    print("|---|---|---|---|---|---|")
    for c in a.configs:
        for r in bench_config(c, a.device, a.dtype, a.repeats, a.steps):
            rows.append(r)
            print(f"| {c} | {r['variant']} | {r['seconds']:.3f} | {r['ratio']:.2f} | {r['min_seconds']:.3f} | {r['min_ratio']:.2f} |", flush=True)
    if a.memory:
        what = "peak GPU allocated" if a.device.startswith("cuda") else "peak RSS of the process (model included)"
        print(f"\n| config | variant | {what} GiB | x none |\n|---|---|---|---|")
        for c in a.configs:
            mem = peak_memory(c, a.device, a.dtype, a.steps)
            for v, gib in mem.items():
                next(r for r in rows if r["config"] == c and r["variant"] == v)["peak_gib"] = gib
                print(f"| {c} | {v} | {gib:.3f} | {gib / mem['none']:.3f} |", flush=True)
    print(f"\ncommand: python bench/generate.py --configs {' '.join(a.configs)} --device {a.device} --dtype {a.dtype} "
          f"--repeats {a.repeats} --steps {a.steps}" + (f" --threads {a.threads}" if a.threads else "")
          + (" --memory" if a.memory else ""))
    if a.json: open(a.json, "w").write(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
