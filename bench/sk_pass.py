"""Time and peak memory of one `forward_sk` + backward on six views, side by side.

Variants (forward + backward to the tokens, with the condition's reference attention): (a) naive — the whole
UNet runs and maps are captured at every cross-attention layer; (b) early exit after StableKeypoints' four
default layers; (c) (b) with the detached query path; (f) (b) keeping every softmax chunk for backward
(`map_checkpoint=False`; the default recomputes them); (g) (b) with the logits in one chunk (what chunking
buys). Map-capture overhead (forward only, no gradient): (d) the stock UNet with diffusers' SDPA processor on
the six views, (e) the same forward capturing the default layers' maps (no early exit, no reference),
reported as (e)/(d) and, less exposed to load changes, as the ratio of the two forwards alternating in (e)'s
process.

    .venv/bin/python bench/sk_pass.py                      # tiny + medium (SD2 block layout, reduced channels)
    .venv/bin/python bench/sk_pass.py --configs sd2        # opt-in: the SD2-size UNet (866 M parameters)
    .venv/bin/python bench/sk_pass.py --device cuda --configs medium sd2

Each variant runs in its own process (so peak RSS is its own on CPU; on CUDA the peak allocated memory).
"""
import argparse, json, multiprocessing as mp, os, resource, sys, time

CONFIGS = {
    # name: UNet channels, heads, cross-attention dim, per-view latent side, tokens, map resolution
    "tiny": dict(channels=(32, 64, 64, 64), heads=(2, 4, 4, 4), dim=32, latent=16, tokens=64, map_res=32),
    "medium": dict(channels=(64, 128, 256, 256), heads=(5, 10, 20, 20), dim=1024, latent=40, tokens=100, map_res=64),
    "sd2": dict(channels=(320, 640, 1280, 1280), heads=(5, 10, 20, 20), dim=1024, latent=40, tokens=500, map_res=128),
}
VARIANTS = {"a_naive": dict(layers="all", early_exit=False, detach_query=False),
            "b_early_exit": dict(layers="default", early_exit=True, detach_query=False),
            "c_early_exit_detached": dict(layers="default", early_exit=True, detach_query=True),
            # (b) keeping each softmax chunk for backward instead of recomputing it (map_checkpoint=False)
            "f_early_exit_keep": dict(layers="default", early_exit=True, detach_query=False, map_checkpoint=False),
            # (b) with the whole logits tensor at once (one chunk): what chunking buys
            "g_early_exit_one_chunk": dict(layers="default", early_exit=True, detach_query=False, map_chunk=2**62),
            # map-capture overhead, forward only: the stock UNet (diffusers' SDPA processor) on the six views, and
            # the same forward with the default maps captured (no early exit, no reference, no gradient)
            "d_plain_forward": dict(plain=True),
            "e_capture_forward": dict(layers="default", early_exit=False, detach_query=False, forward_only=True)}


def build(cfg, device, dtype):
    import torch
    from diffusers import UNet2DConditionModel, DDPMScheduler, EulerAncestralDiscreteScheduler
    from mvsk.models import SCHEDULER_CONFIG
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=cfg["latent"], in_channels=4, out_channels=4, layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, block_out_channels=cfg["channels"],
        attention_head_dim=cfg["heads"], cross_attention_dim=cfg["dim"], use_linear_projection=True,
        norm_num_groups=32 if min(cfg["channels"]) >= 64 else 8).to(device).requires_grad_(False)
    unet.to(dtype=dtype)
    return unet, DDPMScheduler.from_config(SCHEDULER_CONFIG), EulerAncestralDiscreteScheduler.from_config(SCHEDULER_CONFIG)


def run_variant(name, variant, cfg, device, dtype_name, repeats, q):
    import torch
    from mvsk.attention import SKSettings, cross_attention_layers
    from mvsk.unet import RefOnlyNoisedUNet
    dtype = getattr(torch, dtype_name)
    unet, train_s, val_s = build(cfg, device, dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    L = cfg["latent"]
    if variant.get("plain"):
        lat, ctx = torch.randn(6, 4, L, L, device=device, dtype=dtype), torch.randn(6, cfg["tokens"], cfg["dim"], device=device, dtype=dtype)
        def step():
            with torch.no_grad(): unet(lat, 0, ctx)
        return _time(name, step, sync, device, repeats, q)
    layers = cross_attention_layers(unet) if variant["layers"] == "all" else None
    fwd_only = variant.get("forward_only", False)
    sk = SKSettings(map_res=cfg["map_res"], early_exit=variant["early_exit"], detach_query=variant["detach_query"],
                    reference=not fwd_only, map_chunk=variant.get("map_chunk"),
                    map_checkpoint=variant.get("map_checkpoint", True), **({"layers": tuple(layers)} if layers else {}))
    model = RefOnlyNoisedUNet(unet, train_s, val_s, n_tokens=cfg["tokens"], sk=sk).to(device)
    lat = torch.randn(6, 4, L, L, device=device, dtype=dtype)
    cond = torch.randn(1, 4, L, L, device=device, dtype=dtype)
    ehs = torch.randn(1, 77, cfg["dim"], device=device, dtype=dtype)

    def step():
        if fwd_only:
            with torch.no_grad(): model.forward_sk(lat)
            return
        model.tokens.embeddings.grad = None
        out = model.forward_sk(lat, cond, ehs)
        out["sk_maps_mean"]["individual_views"].pow(2).mean().backward()
    extra = {}
    if fwd_only:   # the overhead again, in this one process: plain SDPA and capture forwards alternating
        from diffusers.models.attention_processor import AttnProcessor2_0
        ctx = torch.randn(6, cfg["tokens"], cfg["dim"], device=device, dtype=dtype)
        mine, times = dict(unet.attn_processors), {"plain": [], "capture": []}
        for rnd in range(repeats + 1):                 # round 0 warms up
            for kind in ("plain", "capture"):
                unet.set_attn_processor(AttnProcessor2_0() if kind == "plain" else dict(mine))   # (it empties a dict)
                with torch.no_grad():
                    sync(); t0 = time.perf_counter()
                    unet(lat, 0, ctx) if kind == "plain" else model.forward_sk(lat)
                    sync()
                if rnd: times[kind].append(time.perf_counter() - t0)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        extra = dict(paired_ratio=med["capture"] / med["plain"])
    return _time(name, step, sync, device, repeats, q, extra)


def _time(name, step, sync, device, repeats, q, extra=None):
    import torch
    step(); sync()                                     # warm-up
    if device == "cuda": torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); step(); sync(); times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    q.put(dict(variant=name, seconds=sorted(times)[len(times) // 2], peak_gib=peak, **(extra or {})))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["tiny", "medium"], choices=list(CONFIGS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                    help="a subset to run; ratios need their base row (a_naive or d_plain_forward) in the same run")
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows = []
    print(f"| config | variant | s / step (median of {a.repeats}) | ratio | peak {'GPU alloc' if a.device == 'cuda' else 'RSS'} GiB |")
    print("|---|---|---|---|---|")
    for cname in a.configs:
        bases = {}
        for vname, var in ((v, VARIANTS[v]) for v in VARIANTS if v in a.variants):
            q = ctx.Queue()
            p = ctx.Process(target=run_variant, args=(vname, var, CONFIGS[cname], a.device, a.dtype, a.repeats, q))
            p.start()
            while True:                                    # a child that dies must not leave us waiting
                try: r = q.get(timeout=5); break
                except Exception:
                    if not p.is_alive(): raise SystemExit(f"{cname}/{vname} failed with exit code {p.exitcode}")
            p.join()
            ref = "d_plain_forward" if vname[0] in "de" else "a_naive"   # overhead rows compare with the plain forward
            if vname == ref: bases[ref] = r["seconds"]
            r.update(config=cname, ratio=r["seconds"] / bases[ref] if ref in bases else float("nan"), device=a.device, dtype=a.dtype)
            rows.append(r)
            paired = f"; {r['paired_ratio']:.2f} alternating in one process" if "paired_ratio" in r else ""
            print(f"| {cname} | {vname} | {r['seconds']:.3f} | {r['ratio']:.2f} (vs {ref[2:]}{paired}) | {r['peak_gib']:.2f} |", flush=True)
    print(f"\ncommand: python bench/sk_pass.py --configs {' '.join(a.configs)} --device {a.device} --dtype {a.dtype} "
          f"--repeats {a.repeats}" + (f" --variants {' '.join(a.variants)}" if a.variants != list(VARIANTS) else ""))
    if a.json: open(a.json, "w").write(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
