"""Time and peak memory of one `forward_sk` + backward on six views, side by side.

Variants (forward + backward to the tokens, with the condition's reference attention): (a) naive — the whole
UNet runs and maps are captured at every cross-attention layer; (b) early exit after StableKeypoints' four
default layers; (c) (b) with the detached query path; (f) (b) keeping every softmax chunk for backward
(`map_checkpoint=False`; the default recomputes them); (g) (b) with the logits in one chunk (what chunking
buys); (h) (b) with the maps of one view at a time, rebuilt in backward (`map_views=1`). Map-capture overhead
(forward only, no gradient): (d) the stock UNet with diffusers' SDPA processor on the six views, (e) the same
forward capturing the default layers' maps (no early exit, no reference), reported as (e)/(d) and, less exposed
to load changes, as the ratio of the two forwards alternating in (e)'s process.

The floor of exact map capture, in (e)'s process, alternating with (d) and (e) in the same rounds: for each captured
layer, at the shapes of the run (its recorded features and context), the scores' matrix products, the softmax and
the head-mean alone (bench/map_kernel.py's `floor_forward` and, fused, `floor_fwd_bwd`; all views per chunk and one
view at a time, the faster of the two counting). The capture's extra time ((e) minus (d)) is reported as a multiple
of the summed floor, forward and forward + backward, for the default maps and for `map_views=1`. For the latter, (e)
runs again with a gradient: the maps' backward to each captured layer's features and context (taken as leaves, so
no UNet backward is counted) after the same forward. Beside it, the softmax and head-mean alone over the same
elements, and `token_softmax_maps` alone on the recorded inputs (no UNet around it). `--profile`: one plain and one
capture forward under torch.profiler, and the operators whose self time grew most (the extra, by operator).

    .venv/bin/python bench/sk_pass.py                      # tiny + medium (SD2 block layout, reduced channels)
    .venv/bin/python bench/sk_pass.py --configs sd2        # opt-in: the SD2-size UNet (866 M parameters)
    .venv/bin/python bench/sk_pass.py --device cuda --configs medium sd2
    .venv/bin/python bench/sk_pass.py --configs tiny medium --variants d_plain_forward e_capture_forward --threads 1

Each variant runs in its own process (so peak RSS is its own on CPU; on CUDA the peak allocated memory).
"""
import argparse, json, multiprocessing as mp, os, resource, sys, time

CLOCK = time.perf_counter      # --clock process: this process's CPU time (user + sys), see main's help

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
            # (b) with the maps of one view at a time, each view's logits rebuilt in backward (map_views=1)
            "h_early_exit_views1": dict(layers="default", early_exit=True, detach_query=False, map_views=1),
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


def run_variant(name, variant, cfg, device, dtype_name, repeats, q, threads=0, profile=False, clock="wall"):
    import torch
    global CLOCK
    CLOCK = time.process_time if clock == "process" else time.perf_counter
    if threads: torch.set_num_threads(threads)
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
                    map_checkpoint=variant.get("map_checkpoint", True), map_views=variant.get("map_views"),
                    **({"layers": tuple(layers)} if layers else {}))
    model = RefOnlyNoisedUNet(unet, train_s, val_s, n_tokens=cfg["tokens"], sk=sk).to(device)
    lat = torch.randn(6, 4, L, L, device=device, dtype=dtype)
    cond = torch.randn(1, 4, L, L, device=device, dtype=dtype)
    encoder_hidden_states = torch.randn(1, 77, cfg["dim"], device=device, dtype=dtype)

    def step():
        if fwd_only:
            with torch.no_grad(): model.forward_sk(lat)
            return
        model.tokens.embeddings.grad = None
        out = model.forward_sk(lat, cond, encoder_hidden_states)
        out["sk_maps_mean"]["individual_views"].pow(2).mean().backward()
    extra = {}
    floor = fwd_only and variant.get("floor", True)
    if fwd_only:   # the overhead again, in this one process: plain SDPA and capture forwards alternating
        from diffusers.models.attention_processor import AttnProcessor2_0
        ctx = torch.randn(6, cfg["tokens"], cfg["dim"], device=device, dtype=dtype)
        mine, times = dict(unet.attn_processors), {"plain": [], "capture": []}
        for rnd in range(repeats + 1):                 # round 0 warms up
            for kind in ("plain", "capture"):
                unet.set_attn_processor(AttnProcessor2_0() if kind == "plain" else dict(mine))   # (it empties a dict)
                with torch.no_grad():
                    sync(); t0 = CLOCK()
                    unet(lat, 0, ctx) if kind == "plain" else model.forward_sk(lat)
                    sync()
                if rnd: times[kind].append(CLOCK() - t0)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        extra = dict(paired_ratio=med["capture"] / med["plain"])
        if floor: extra["floor"] = floor_rounds(model, unet, lat, ctx, AttnProcessor2_0, mine, sync, repeats, device)
        if profile: extra["profile"] = profile_extra(model, unet, lat, ctx, AttnProcessor2_0, mine)
    return _time(name, step, sync, device, repeats, q, extra)


def _patched_maps(wrapper):
    "Context manager: the processor's `token_softmax_maps` replaced by `wrapper(real, *args, **kw)`."
    import contextlib
    import mvsk.attention as A
    @contextlib.contextmanager
    def cm():
        real = A.token_softmax_maps
        A.token_softmax_maps = lambda *a, **k: wrapper(real, *a, **k)
        try: yield
        finally: A.token_softmax_maps = real
    return cm()


def floor_rounds(model, unet, lat, ctx, Plain, mine, sync, repeats, device):
    "Plain forward, capture forward and forward + backward, their floors and the kernel alone, alternating by round."
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from map_kernel import floor_inputs, floor_forward, floor_fwd_bwd, softmax_floor
    from mvsk.fastmaps import token_softmax_maps
    layers = []                                           # (attn, features, context, hw, r, chunk) per captured layer
    def record(real, attn, queries, context, hw, map_res, token_slice=slice(None), chunk=None, *a, **k):
        layers.append((attn, queries.detach(), context.detach(), hw, map_res, chunk))
        return real(attn, queries, context, hw, map_res, token_slice, chunk, *a, **k)
    def leaf(real, attn, queries, context, *a, **k):     # the maps' backward only, to the layer's inputs
        return real(attn, queries.detach().requires_grad_(), context.detach().requires_grad_(), *a, **k)
    unet.set_attn_processor(dict(mine))
    with torch.no_grad(), _patched_maps(record): model.forward_sk(lat)
    floors = [floor_inputs(a, x, c, hw, r, chunk) for a, x, c, hw, r, chunk in layers]
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(f["N"], f["R"] * f["u"], f["S"], generator=gen).to(device) for f in floors]
    T, r = model.tokens.n_tokens, layers[0][4]
    G = torch.randn(1, lat.shape[0], T, r, r, generator=gen).to(device)
    tokens = model.tokens.embeddings.detach()

    def plain():
        unet.set_attn_processor(Plain())
        with torch.no_grad(): unet(lat, 0, ctx)
    def capture(**kw):
        unet.set_attn_processor(dict(mine))
        with torch.no_grad(): model.forward_sk(lat, **kw)
    def capture_fb(**kw):
        unet.set_attn_processor(dict(mine))
        with _patched_maps(leaf):
            m = model.forward_sk(lat, tokens=tokens, **kw)["sk_maps_mean"]["individual_views"]
            (m * G).sum().backward()
    def kernel(views=None):
        with torch.no_grad():
            for a, x, c, hw, r_, chunk in layers: token_softmax_maps(a, x, c, hw, r_, chunk=chunk, views=views)
    def kernel_fb(views=None):
        for (a, x, c, hw, r_, chunk), g in zip(layers, grads):
            x, c = x.clone().requires_grad_(), c.clone().requires_grad_()
            m = token_softmax_maps(a, x, c, hw, r_, chunk=chunk, views=views)
            torch.autograd.grad((m.flatten(2).transpose(1, 2) * g).sum(), (x, c))
    with torch.no_grad():
        err = max((floor_forward(f) - token_softmax_maps(a, x, c, hw, r_, chunk=ch).flatten(2).transpose(1, 2)).abs().max().item()
                  for f, (a, x, c, hw, r_, ch) in zip(floors, layers))
    parts = dict(plain=plain, capture=capture, capture_fb=capture_fb,
                 capture_v1=lambda: capture(map_views=1), capture_fb_v1=lambda: capture_fb(map_views=1),
                 floor_all=lambda: [floor_forward(f) for f in floors],
                 floor_fb_all=lambda: [floor_fwd_bwd(f, g) for f, g in zip(floors, grads)],
                 floor_one=lambda: [floor_forward(f, 1) for f in floors],
                 floor_fb_one=lambda: [floor_fwd_bwd(f, g, 1) for f, g in zip(floors, grads)],
                 softmax=lambda: [softmax_floor(f) for f in floors],
                 softmax_fb=lambda: [softmax_floor(f, g) for f, g in zip(floors, grads)],
                 kernel=kernel, kernel_fb=kernel_fb, kernel_v1=lambda: kernel(1), kernel_fb_v1=lambda: kernel_fb(1))
    times = {k: [] for k in parts}
    for rnd in range(repeats + 1):                        # round 0 warms up
        for k, fn in parts.items():
            sync(); t0 = CLOCK(); fn(); sync()
            if rnd: times[k].append(CLOCK() - t0)
    unet.set_attn_processor(dict(mine))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for sfx in ("", "_fb"):                               # the floor: the faster grouping
        med["floor" + sfx] = min(med[f"floor{sfx}_all"], med[f"floor{sfx}_one"])
    shapes = [f"{f['N']}x{f['H']}x{f['h']}x{f['w']}->{f['r']}² S={f['S']} ({f['order']} first)" for f in floors]
    return dict(seconds=med, layers=shapes, max_abs_diff=err)


def profile_extra(model, unet, lat, ctx, Plain, mine, top=12):
    "Self time by operator (CPU; on CUDA the device's) of one plain and one capture forward; the operators whose time grew most."
    import torch
    from torch.profiler import profile, ProfilerActivity
    cuda = lat.device.type == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    self_s = lambda e: (getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)) / 1e6 if cuda \
        else e.self_cpu_time_total / 1e6
    selfs = {}
    for kind in ("plain", "capture"):
        unet.set_attn_processor(Plain() if kind == "plain" else dict(mine))
        with torch.no_grad(), profile(activities=acts) as prof:
            unet(lat, 0, ctx) if kind == "plain" else model.forward_sk(lat)
            if cuda: torch.cuda.synchronize()
        selfs[kind] = {e.key: (self_s(e), e.count) for e in prof.key_averages()}
    unet.set_attn_processor(dict(mine))
    diff = {k: (v[0] - selfs["plain"].get(k, (0, 0))[0], v[1] - selfs["plain"].get(k, (0, 0))[1])
            for k, v in selfs["capture"].items()}
    total = {k: sum(v[0] for v in d.values()) for k, d in selfs.items()}
    return dict(total=total, top=sorted(diff.items(), key=lambda kv: -kv[1][0])[:top])


def _time(name, step, sync, device, repeats, q, extra=None):
    import torch
    step(); sync()                                     # warm-up
    if device == "cuda": torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = CLOCK(); step(); sync(); times.append(CLOCK() - t0)
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
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each variant's process (0: torch's default)")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor rounds in (e)'s process")
    ap.add_argument("--clock", default="wall", choices=["wall", "process"],
                    help="what a time is: wall clock, or the process's CPU time (user + sys; on one thread its compute "
                         "time without the waits for a core shared with other jobs; CPU only)")
    ap.add_argument("--profile", action="store_true", help="(e): the extra time by operator (torch.profiler)")
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
            var = dict(var, floor=not a.no_floor)
            p = ctx.Process(target=run_variant, args=(vname, var, CONFIGS[cname], a.device, a.dtype, a.repeats, q,
                                                      a.threads, a.profile, a.clock))
            p.start()
            while True:                                    # a child that dies must not leave us waiting
                try: r = q.get(timeout=5); break
                except Exception:
                    if not p.is_alive(): raise SystemExit(f"{cname}/{vname} failed with exit code {p.exitcode}")
            p.join()
            # overhead rows compare with the plain forward, (h) with (b), the others with the naive pass
            ref = "d_plain_forward" if vname[0] in "de" else "b_early_exit" if vname[0] == "h" else "a_naive"
            bases[vname] = r["seconds"]
            r.update(config=cname, ratio=r["seconds"] / bases[ref] if ref in bases else float("nan"), device=a.device, dtype=a.dtype)
            rows.append(r)
            paired = f"; {r['paired_ratio']:.2f} alternating in one process" if "paired_ratio" in r else ""
            print(f"| {cname} | {vname} | {r['seconds']:.3f} | {r['ratio']:.2f} (vs {ref[2:]}{paired}) | {r['peak_gib']:.2f} |", flush=True)
    floors = [r for r in rows if "floor" in r]
    if floors:
        print(f"\nThe floor of exact map capture (alternating by round in (e)'s process, median of {a.repeats} rounds; s):")
        print("| config | pass | maps | plain forward | capture | extra (capture − plain) | floor: scores + softmax + "
              "head-mean (all views; one view at a time) | **extra / floor** | softmax + head-mean alone | "
              "`token_softmax_maps` alone | kernel / floor |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in floors:
            t = r["floor"]["seconds"]
            for label, sfx in (("forward", ""), ("fwd + bwd", "_fb")):
                for maps, v in (("default", ""), ("map_views=1", "_v1")):
                    ex = t["capture" + sfx + v] - t["plain"]
                    fl = t["floor" + sfx]
                    print(f"| {r['config']} | {label} | {maps} | {t['plain']:.3f} | {t['capture' + sfx + v]:.3f} | {ex:.3f} | "
                          f"{fl:.3f} ({t['floor' + sfx + '_all']:.3f}; {t['floor' + sfx + '_one']:.3f}) | **{ex / fl:.2f}** | "
                          f"{t['softmax' + sfx]:.3f} | {t['kernel' + sfx + v]:.3f} | {t['kernel' + sfx + v] / fl:.2f} |")
        for r in floors:
            print(f"{r['config']}: captured layers {'; '.join(r['floor']['layers'])}; the floor's maps differ from "
                  f"token_softmax_maps' by at most {r['floor']['max_abs_diff']:.1e}")
    for r in (r for r in rows if "profile" in r):
        p = r["profile"]
        print(f"\n{r['config']}: self {'CPU' if a.device == 'cpu' else 'device'} time under torch.profiler, plain {p['total']['plain']:.2f} s, capture "
              f"{p['total']['capture']:.2f} s; the operators whose self time grew most (s, calls):")
        print("| operator | extra self s | extra calls |")
        print("|---|---|---|")
        for k, (sec, n) in p["top"]: print(f"| `{k}` | {sec:.3f} | {n} |")
    print(f"\ncommand: python bench/sk_pass.py --configs {' '.join(a.configs)} --device {a.device} --dtype {a.dtype} "
          f"--repeats {a.repeats}" + (f" --variants {' '.join(a.variants)}" if a.variants != list(VARIANTS) else "")
          + (f" --threads {a.threads}" if a.threads else "") + (" --no-floor" if a.no_floor else "")
          + (f" --clock {a.clock}" if a.clock != "wall" else "")
          + (" --profile" if a.profile else ""))
    if a.json: open(a.json, "w").write(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
