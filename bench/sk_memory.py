"""Peak memory and time of one object's `sk_step` at StableKeypoints' settings, per UNet dtype and map setting.

One step = `RefOnlyNoisedUNet.sk_step` on one object (six 320² views encoded by the VAE, their random-affine
augmentation, two keypoint passes with the condition's reference attention, 500 float32 tokens, float32 maps at
128², early exit) and the backward of its loss to the tokens, as `mvsk.discovery.discovery_step` runs it. The UNet
(and the VAE) are SD2-size with random weights (`--config sd2`: bench/sk_pass.py's UNet, 866 M parameters; the
VAE with SD2's channels 128/256/512/512) in the dtype of the row.

Each row runs in its own process: build, then `--steps` steps; the row reports the last step's seconds (wall clock,
and the process's CPU time, user + sys: on one thread, its compute time without the waits for a core shared with
other jobs) and the highest peak over the steps. Memory on CPU: the process's peak resident set (VmHWM, reset before each step
through /proc/self/clear_refs), the resident set once the model is built (`model`), their difference (`step`),
and the weights' bytes; on CUDA: `torch.cuda.max_memory_allocated` (reset before each step), which includes the
weights, and the weights' bytes.

    .venv/bin/python bench/sk_memory.py --threads 1                               # sd2: float32, bfloat16
    .venv/bin/python bench/sk_memory.py --config medium --steps 2 --threads 1     # a quick check
    .venv/bin/python bench/sk_memory.py --device cuda --dtypes float16 bfloat16 float32
    .venv/bin/python bench/sk_memory.py --maps default views=1 --dtypes bfloat16   # map settings side by side

`--maps`: `default` (SKSettings' defaults) or comma-separated SKSettings fields, e.g. `views=1`
(`map_views=1`), `checkpoint=0` (`map_checkpoint=False`).
"""
import argparse, json, multiprocessing as mp, os, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sk_pass import CONFIGS, build     # the same UNet as the keypoint-pass benchmark


def _status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field): return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_gib(): return _status_kib("VmRSS:") / 2**20


def reset_peak(device):
    import torch
    if device == "cuda": torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    else: open("/proc/self/clear_refs", "w").write("5")   # resets VmHWM to the current resident set


def peak_gib(device):
    import torch
    if device == "cuda": return torch.cuda.max_memory_allocated() / 2**30
    return _status_kib("VmHWM:") / 2**20


def parse_maps(spec):
    "'default' -> {}; 'views=1,checkpoint=0' -> {'map_views': 1, 'map_checkpoint': False}"
    if spec == "default": return {}
    out = {}
    for part in spec.split(","):
        k, v = part.split("=")
        k = k if k.startswith("map_") or k in ("detach_query", "early_exit") else "map_" + k
        out[k] = bool(int(v)) if k in ("map_checkpoint", "detach_query", "early_exit") else int(v)
    return out


def build_vae(cfg, device, dtype):
    import torch
    from diffusers import AutoencoderKL
    torch.manual_seed(1)
    small = cfg["channels"][0] < 320
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1 if small else 2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(32, 64, 64, 64) if small else (128, 256, 512, 512),
                        norm_num_groups=8 if small else 32, scaling_factor=0.18215)
    return vae.to(device=device, dtype=dtype).eval().requires_grad_(False)


def watchdog(max_gib):
    "Exit this process before its resident set passes `max_gib` (a shared machine must not swap or kill others)."
    import threading
    def watch():
        while True:
            if rss_gib() > max_gib:
                print(f"resident set above --max-gib {max_gib}: stopping this row", file=sys.stderr, flush=True)
                os._exit(3)
            time.sleep(0.2)
    threading.Thread(target=watch, daemon=True).start()


def run_row(cfg, dtype_name, maps, device, steps, threads, max_gib, q):
    import torch
    if threads: torch.set_num_threads(threads)
    if device != "cuda" and max_gib: watchdog(max_gib)
    from transformers import CLIPImageProcessorPil
    from mvsk.attention import SKSettings
    from mvsk.cameras import zero123plus_cameras
    from mvsk.losses import LossConfig
    from mvsk.models import Zero123PlusComponents
    from mvsk.unet import RefOnlyNoisedUNet
    dtype = getattr(torch, dtype_name)
    rss0 = rss_gib()
    unet, train_s, val_s = build(cfg, device, dtype)
    vae = build_vae(cfg, device, dtype)
    S = cfg["latent"] * 8
    proc = CLIPImageProcessorPil(size={"shortest_edge": S}, crop_size={"height": S, "width": S},
                                 image_mean=[0.5] * 3, image_std=[0.8] * 3)
    comp = Zero123PlusComponents(vae=vae, text_encoder=None, tokenizer=None, unet=unet, vision_encoder=None,
                                 feature_extractor_clip=None, feature_extractor_vae=proc, scheduler=val_s,
                                 train_scheduler=train_s, ramping_coefficients=torch.ones(77))
    model = RefOnlyNoisedUNet.from_components(comp, n_tokens=cfg["tokens"], sk=SKSettings(map_res=cfg["map_res"], **maps))
    model = model.to(device).train()
    weights = sum(p.numel() * p.element_size() for m in (unet, vae) for p in m.parameters()) / 2**30
    g = torch.Generator().manual_seed(0)
    views = torch.rand(1, 6, 3, S, S, generator=g).to(device)
    cond_lat = torch.randn(1, 4, cfg["latent"], cfg["latent"], generator=g).to(device, dtype)
    encoder_hidden_states = torch.randn(1, 77, cfg["dim"], generator=g).to(device, dtype)
    cams = zero123plus_cameras("v1.2")
    loss_cfg = LossConfig()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    import gc; gc.collect()
    rss_model = rss_gib()
    peaks, times, cpu = [], [], []
    for i in range(steps):
        gc.collect(); reset_peak(device)
        t0, c0 = time.perf_counter(), time.process_time()
        model.tokens.embeddings.grad = None
        out = model.sk_step(views, cams, cond_lat, encoder_hidden_states, epoch=100, loss_cfg=loss_cfg,
                            generator=torch.Generator(device).manual_seed(i))
        out["sk_loss"]["total"].backward()
        sync()
        times.append(time.perf_counter() - t0); cpu.append(time.process_time() - c0)
        loss = float(out["sk_loss"]["total"].detach())
        del out
        peaks.append(peak_gib(device))
    grad = model.tokens.embeddings.grad
    q.put(dict(dtype=dtype_name, maps=maps, seconds=times[-1], seconds_all=times, cpu_seconds=cpu[-1], peak_gib=max(peaks),
               model_gib=rss_model - rss0, base_gib=rss0, weights_gib=weights, loss=loss,
               grad_norm=float(grad.norm()), step_gib=max(peaks) - rss_model if device != "cuda" else None))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="sd2", choices=list(CONFIGS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--maps", nargs="+", default=["default"], help="map settings, one row each (see above)")
    ap.add_argument("--steps", type=int, default=1, help="steps per row; the last one is timed (2: one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each row's process (0: torch's default)")
    ap.add_argument("--max-gib", type=float, default=0, help="CPU: stop a row whose resident set passes this (0: no limit)")
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    rows, cpu = [], a.device != "cuda"
    print(f"config {a.config}: {CONFIGS[a.config]}; device {a.device}; threads {a.threads or 'default'}; {a.steps} step(s) per row")
    print("| UNet dtype | maps | s / step (wall) | CPU s / step | peak GiB | " + ("model GiB (RSS) | step GiB (peak − model) | " if cpu else "")
          + "weights GiB |")
    print("|---|---|---|---|---|" + ("---|---|" if cpu else "") + "---|")
    for dtype in a.dtypes:
        for spec in a.maps:
            q = ctx.Queue()
            p = ctx.Process(target=run_row, args=(CONFIGS[a.config], dtype, parse_maps(spec), a.device, a.steps, a.threads,
                                                 a.max_gib, q))
            p.start()
            while True:                                    # a child that dies must not leave us waiting
                try: r = q.get(timeout=5); break
                except Exception:
                    if not p.is_alive(): raise SystemExit(f"{dtype}/{spec} failed with exit code {p.exitcode}")
            p.join()
            r["spec"] = spec
            rows.append(r)
            mem = f"{r['model_gib']:.2f} | {r['step_gib']:.2f} | " if cpu else ""
            print(f"| {dtype} | {spec} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {r['peak_gib']:.2f} | {mem}"
                  f"{r['weights_gib']:.2f} |", flush=True)
    print(f"\ncommand: python bench/sk_memory.py --config {a.config} --device {a.device} --dtypes {' '.join(a.dtypes)} "
          f"--maps {' '.join(a.maps)} --steps {a.steps}" + (f" --threads {a.threads}" if a.threads else ""))
    print("losses / token-gradient norms (equal rows compute the same step):",
          ", ".join(f"{r['dtype']}/{r['spec']}: {r['loss']:.6g} / {r['grad_norm']:.6g}" for r in rows))
    if a.json: open(a.json, "w").write(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
