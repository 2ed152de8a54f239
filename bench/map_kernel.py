"""One captured layer's keypoint maps, step by step: what each of `token_softmax_maps`' three liberties buys.

Rows, each timed side by side in this process (median of --repeats after a warm-up), forward only and
forward + backward to the features and the context:

- literal: StableKeypoints' order: bicubic-resize the features (`F.interpolate`), `to_q`, whole logits tensor,
  softmax, head-mean;
- project first: `to_q` at low resolution, then `F.interpolate` the queries (liberty 1);
- + resize matrices: the resize as two small matrix products (liberty 2), whole logits tensor;
- + chunks, autograd: softmax in chunks of query pixels (liberty 3), the default chunk size for the device,
  backward by autograd through each chunk's ops;
- + own backward, kept: `token_softmax_maps(checkpoint=False)`: the chunks with `HeadMeanSoftmax`'s hand-written
  backward, each chunk's softmax kept for it, and the order `score_first` picks (score, then resize the logits,
  when the head dim exceeds the layer's side: liberty 4; the header line says which);
- + recompute (mvsk default): `token_softmax_maps()`, each chunk's softmax recomputed in backward.

    .venv/bin/python bench/map_kernel.py                                   # medium, SD2-layout layers, CPU
    .venv/bin/python bench/map_kernel.py --layer sd2 --device cuda         # SD2 at 128² and 500 tokens
"""
import argparse, time

import torch
import torch.nn.functional as F
from einops import rearrange
from diffusers.models.attention_processor import Attention

from mvsk.attention import token_softmax_maps, bicubic_matrix, default_map_chunk, score_first

LAYERS = {  # one up_blocks.1 cross-attention layer: channels, heads, context dim, per-view side, tokens, map side
    "tiny": dict(C=64, heads=4, D=32, side=4, T=64, r=32),
    "medium": dict(C=240, heads=20, D=1024, side=10, T=100, r=64),
    "sd2": dict(C=1280, heads=20, D=1024, side=10, T=500, r=128),
}


def literal(attn, x, ctx, side, r):
    up = F.interpolate(rearrange(x, "n (h w) c -> n c h w", h=side), size=(r, r), mode="bicubic", align_corners=False)
    q = rearrange(attn.to_q(rearrange(up, "n c h w -> n (h w) c")), "n l (hd d) -> n hd l d", hd=attn.heads)
    k = rearrange(attn.to_k(ctx), "n s (hd d) -> n hd s d", hd=attn.heads)
    return (q @ k.transpose(-1, -2) * attn.scale).softmax(-1).mean(1)


def project_first(attn, x, ctx, side, r, resize="interpolate"):
    q = rearrange(attn.to_q(x) * attn.scale, "n (h w) c -> n c h w", h=side)
    if resize == "interpolate": q = F.interpolate(q, size=(r, r), mode="bicubic", align_corners=False)
    else: q = bicubic_matrix(side, r, q.device) @ q @ bicubic_matrix(side, r, q.device).T
    q = rearrange(q, "n (hd d) h w -> n hd (h w) d", hd=attn.heads)
    k = rearrange(attn.to_k(ctx), "n s (hd d) -> n hd d s", hd=attn.heads)
    return (q @ k).softmax(-1).mean(1)


def chunked_autograd(attn, x, ctx, side, r):
    q = rearrange(attn.to_q(x) * attn.scale, "n (h w) c -> n c h w", h=side)
    q = bicubic_matrix(side, r, q.device) @ q @ bicubic_matrix(side, r, q.device).T
    q = rearrange(q, "n (hd d) h w -> n hd (h w) d", hd=attn.heads)
    k = rearrange(attn.to_k(ctx), "n s (hd d) -> n hd d s", hd=attn.heads)
    rows = max(1, default_map_chunk(q.device) // (q.shape[0] * attn.heads * k.shape[-1]))
    return torch.cat([(q[:, :, i:i + rows] @ k).softmax(-1).mean(1) for i in range(0, r * r, rows)], dim=1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", default="medium", choices=list(LAYERS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip", nargs="+", default=[], help="rows to leave out, e.g. 'chunks,' (with --layer sd2 on a 24 GiB "
                    "CPU machine, autograd over a thousand chunks runs out of memory)")
    a = ap.parse_args(argv)
    c = LAYERS[a.layer]
    torch.manual_seed(0)
    attn = Attention(query_dim=c["C"], cross_attention_dim=c["D"], heads=c["heads"], dim_head=c["C"] // c["heads"])
    attn = attn.to(a.device).requires_grad_(False)
    x = torch.randn(a.views, c["side"] ** 2, c["C"], device=a.device, requires_grad=True)
    ctx = torch.randn(a.views, c["T"], c["D"], device=a.device, requires_grad=True)
    side, r = c["side"], c["r"]
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    rows = {"literal": lambda: literal(attn, x, ctx, side, r),
            "project first": lambda: project_first(attn, x, ctx, side, r),
            "+ resize matrices": lambda: project_first(attn, x, ctx, side, r, resize="matrices"),
            "+ chunks, autograd": lambda: chunked_autograd(attn, x, ctx, side, r),
            "+ own backward, kept": lambda: token_softmax_maps(attn, x, ctx, (side, side), r, checkpoint=False),
            "+ recompute (mvsk default)": lambda: token_softmax_maps(attn, x, ctx, (side, side), r)}
    g = torch.randn(a.views, r * r, c["T"], device=a.device)

    def timed(f):
        f(); sync()
        ts = []
        for _ in range(a.repeats):
            t0 = time.perf_counter(); f(); sync(); ts.append(time.perf_counter() - t0)
        return sorted(ts)[len(ts) // 2]

    def fwd_bwd(make):
        def step():
            m = make()
            m = m if m.ndim == 3 else rearrange(m, "n t h w -> n (h w) t")
            torch.autograd.grad((m * g).sum(), (x, ctx))
        return step

    print(f"layer {a.layer}: {a.views} views, {c['heads']} heads, {side}² -> {r}², {c['T']} tokens, "
          f"chunk {default_map_chunk(a.device)} elements; score first: {score_first((side, side), c['C'] // c['heads'], r)}; "
          f"device {a.device}")
    print("| variant | forward ms | × literal | fwd+bwd ms | × literal |")
    print("|---|---|---|---|---|")
    base_f = base_b = None
    for name, make in rows.items():
        if any(k in name for k in a.skip): continue
        with torch.no_grad(): tf = timed(make)
        tb = timed(fwd_bwd(make))
        base_f, base_b = base_f or tf, base_b or tb
        print(f"| {name} | {tf * 1e3:.1f} | {tf / base_f:.2f} | {tb * 1e3:.1f} | {tb / base_b:.2f} |", flush=True)
    print(f"\ncommand: python bench/map_kernel.py --layer {a.layer} --device {a.device} --views {a.views} --repeats {a.repeats}"
          + (f" --skip {' '.join(repr(k) for k in a.skip)}" if a.skip else ""))


if __name__ == "__main__":
    main()
