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
- + recompute (mvsk default): `token_softmax_maps()`, each chunk's softmax recomputed in backward;
- + views in groups of one: `token_softmax_maps(views=1)` (`SKSettings.map_views=1`): each view's factors of the
  logits built, used and freed in turn, rebuilt in backward;
- floor: softmax + head-mean alone: the same softmax and head-mean over the same chunks of logits already in a
  buffer (with the softmax's backward for fwd+bwd): no scores, no products;
- floor: scores + softmax + head-mean: the scores' matrix products (in the order of the row above), the softmax
  and the head-mean, from the layer's projected queries and keys, chunk by chunk, without projections, autograd or
  checks; fwd+bwd fused per chunk (one scoring, one softmax), down to the projected queries and keys (see
  `floor_inputs`); and the same one view at a time. The last line gives the mvsk default and `map_views=1` as
  multiples of the faster of the two floor rows.
  The floor rows are timed after the others; the ratio columns divide by the first row run (literal unless skipped).

    .venv/bin/python bench/map_kernel.py                                   # medium, SD2-layout layers, CPU
    .venv/bin/python bench/map_kernel.py --layer sd2 --device cuda         # SD2 at 128² and 500 tokens
"""
import argparse, time

import torch
import torch.nn.functional as F
from einops import rearrange
from diffusers.models.attention_processor import Attention

from mvsk.fastmaps import token_softmax_maps, bicubic_matrix, default_map_chunk, score_first

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


# --- the floor: the scores' matrix products, the softmax and the head-mean alone ----------------------------------------
# What any exact computation of one layer's maps must do, from the layer's projected queries and keys (computed once,
# outside the timing) to the (N, r², S) maps: the scores at r² (in the order `token_softmax_maps` picks for the layer:
# scoring at the layer's resolution and resizing the logits by the bicubic matrices, each output row reading only its
# band of rows; or resizing the queries, then scoring), the softmax over the tokens and the mean over the heads, in
# chunks of the same element budget, each chunk's temporaries in buffers allocated once (so no allocator, no page
# faults: the arithmetic alone). No projection, no autograd, no checks. `views=n`: n views at a time (each
# group's operands built and used in turn, as `token_softmax_maps(views=n)`), which keeps a group's operands in cache.
# Forward + backward is fused per chunk (the upstream gradient is known in advance): one scoring and one softmax per
# chunk, the softmax's backward (torch's fused kernel) and the products' gradients down to the projected queries and
# keys. A real backward cannot fuse (the gradient comes after the forward): it keeps each chunk's softmax or
# recomputes it, so the fused form is a lower bound.

def floor_inputs(attn, x, ctx, hw, r, chunk=None):
    "One layer's floor operands from its own projections of the features `x` (N, h*w, C) and the context (N, S, D)."
    with torch.no_grad():
        N, (h, w), H = x.shape[0], hw, attn.heads
        lin = lambda layer, t: F.linear(t, layer.weight.float(), None if layer.bias is None else layer.bias.float())
        q = lin(attn.to_q, x.float()) * attn.scale
        kT = rearrange(lin(attn.to_k, ctx.float()), "n s (hd d) -> n hd d s", hd=H).contiguous()
        d, S, dev = q.shape[-1] // H, kT.shape[-1], q.device
        score = score_first(hw, d, r)                     # q: (N, H, h*w, d) to score, (N, C, h, w) to resize
        q = rearrange(q, "n l (hd d) -> n hd l d", hd=H) if score else rearrange(q, "n (y x) c -> n c y x", y=h)
        q = q.contiguous()
        return dict(q=q, kT=kT, N=N, H=H, h=h, w=w, r=r, S=S, order="score" if score else "resize",
                    u=r if score else 1, R=r if score else r * r, budget=chunk or default_map_chunk(dev),
                    Mh=bicubic_matrix(h, r, dev), Mw=bicubic_matrix(w, r, dev))


def _plan(f, n):
    "Rows of A per chunk for n views, and the columns each chunk reads (a resize row: its band)."
    rows = max(1, f["budget"] // (n * f["H"] * f["u"] * f["S"]))
    if f["order"] == "resize": return rows, [slice(None)] * len(range(0, f["R"], rows))
    nz, bands = f["Mh"].ne(0).cpu(), []
    for i in range(0, f["R"], rows):
        cols = nz[i:i + rows].any(0).nonzero()
        bands.append(slice(int(cols.min()), int(cols.max()) + 1))
    return rows, bands


def _groups(f, views):
    "Per group of views: (slice, rows, bands); the plans computed once per group size."
    plans, out = {}, []
    for g in range(0, f["N"], views or f["N"]):
        sl = slice(g, min(f["N"], g + (views or f["N"])))
        n = sl.stop - sl.start
        if n not in plans: plans[n] = _plan(f, n)
        out.append((sl, *plans[n]))
    return out


def _floor_operands(f, q, kT):
    "A (.., R, k) and B (n, H, k, u·S) for the views of q, kT: the logits of rows i.. of A are A[.., i:i+n, :] @ B."
    n, H, h, w, r, S = q.shape[0], f["H"], f["h"], f["w"], f["r"], f["S"]
    if f["order"] == "score":
        L = (q @ kT).view(n, H, h, w, S)                                               # scores at h×w
        return f["Mh"], torch.einsum("Xx,nhyxs->nhyXs", f["Mw"], L).reshape(n, H, h, r * S)   # width resized
    qr = f["Mh"] @ q @ f["Mw"].T                                                         # queries resized to r²
    return rearrange(qr, "n (hd d) y x -> n hd (y x) d", hd=H).contiguous(), kT


def _buffers(f, n, rows):
    "Chunk buffers for n views, allocated once per layer and grouping and reused by every chunk (no allocator in the floor)."
    key = ("buffers", n)
    if key not in f:
        H, u, S, dev, size = f["H"], f["u"], f["S"], f["q"].device, n * f["H"] * min(rows, f["R"]) * f["u"] * f["S"]
        f[key] = dict(L=torch.empty(size, device=dev), P=torch.empty(size, device=dev), D=torch.empty(size, device=dev),
                      g=torch.empty(size // H, device=dev))
    return f[key]


def _chunk(buf, n, H, m, u, S):
    "A flat buffer's first n·H·m·u·S elements, as (n, H, m·u, S)."
    return buf[:n * H * m * u * S].view(n, H, m * u, S)


def _scores(Ai, Bb, L, n, H):
    "L (n, H, m·u, S) <- the chunk's logits Ai @ Bb, one batched product into the buffer."
    A3 = Ai.expand(n * H, *Ai.shape) if Ai.ndim == 2 else Ai.flatten(0, 1)
    torch.bmm(A3, Bb.flatten(0, 1), out=L.view(n * H, A3.shape[-2], -1))


def floor_forward(f, views=None):
    "Maps (N, r², S) of one layer: the scores, the softmax and the head-mean, chunk by chunk, in reused buffers."
    H, S, u = f["H"], f["S"], f["u"]
    out = f["q"].new_empty(f["N"], f["R"] * u, S)
    for sl, rows, bands in _groups(f, views):
        A, B = _floor_operands(f, f["q"][sl], f["kT"][sl])
        n, o, b = B.shape[0], out[sl], _buffers(f, B.shape[0], rows)
        for i, band in zip(range(0, f["R"], rows), bands):
            Ai = A[..., i:i + rows, band]
            m = Ai.shape[-2]
            L, P = _chunk(b["L"], n, H, m, u, S), _chunk(b["P"], n, H, m, u, S)
            _scores(Ai, B[:, :, band], L, n, H)
            torch.ops.aten._softmax.out(L, -1, False, out=P)
            torch.mean(P, dim=1, out=o[:, i * u:(i + m) * u])
    return out


def softmax_floor(f, grad=None, views=None):
    """The softmax and the head-mean alone (with `grad`: and the softmax's backward) over the same elements in the same
    chunks, on logits already in a buffer: no scores, no products."""
    H, S, u, R = f["H"], f["S"], f["u"], f["R"]
    out = f["q"].new_empty(f["N"], R * u, S)
    for sl, rows, _ in _groups(f, views):
        n = sl.stop - sl.start
        b = _buffers(f, n, rows)
        if ("logits", n) not in f: f[("logits", n)] = torch.randn(b["L"].numel(), device=f["q"].device)
        for i in range(0, R, rows):
            m = min(rows, R - i)
            L, P = _chunk(f[("logits", n)], n, H, m, u, S), _chunk(b["P"], n, H, m, u, S)
            torch.ops.aten._softmax.out(L, -1, False, out=P)
            torch.mean(P, dim=1, out=out[sl, i * u:(i + m) * u])
            if grad is not None:
                g = torch.div(grad[sl, None, i * u:(i + m) * u], H, out=_chunk(b["g"], n, 1, m, u, S))
                torch.ops.aten._softmax_backward_data.out(g.expand_as(P), P, -1, P.dtype, grad_input=_chunk(b["D"], n, H, m, u, S))
    return out


def floor_fwd_bwd(f, grad, views=None):
    "Maps and the gradients of <maps, grad> to the projected queries and keys, fused chunk by chunk, in reused buffers."
    H, S, u, h, w, r = (f[k] for k in "H S u h w r".split())
    score = f["order"] == "score"
    out, dq, dk = f["q"].new_empty(f["N"], f["R"] * u, S), torch.empty_like(f["q"]), torch.empty_like(f["kT"])
    for sl, rows, bands in _groups(f, views):
        q, kT = f["q"][sl], f["kT"][sl]
        A, B = _floor_operands(f, q, kT)
        n, b = B.shape[0], _buffers(f, B.shape[0], rows)
        dA = None if score else torch.zeros_like(A)
        dB = torch.zeros_like(B)
        for i, band in zip(range(0, f["R"], rows), bands):
            Ai = A[..., i:i + rows, band]
            m = Ai.shape[-2]
            L, P, D = (_chunk(b[k], n, H, m, u, S) for k in "LPD")
            _scores(Ai, B[:, :, band], L, n, H)
            torch.ops.aten._softmax.out(L, -1, False, out=P)
            torch.mean(P, dim=1, out=out[sl, i * u:(i + m) * u])
            g = torch.div(grad[sl, None, i * u:(i + m) * u], H, out=_chunk(b["g"], n, 1, m, u, S))
            torch.ops.aten._softmax_backward_data.out(g.expand_as(P), P, -1, P.dtype, grad_input=D)   # p ⊙ (g − ⟨p, g⟩)
            D = D.view(n, H, m, u * S)
            if score:                                                               # dB's band += Mᵀ · dlogits, in place
                dB[:, :, band].flatten(0, 1).baddbmm_(Ai.T.expand(n * H, *Ai.T.shape), D.flatten(0, 1))
            else:
                dA[:, :, i:i + m] = D @ B.transpose(-1, -2)
                dB.flatten(0, 1).baddbmm_(Ai.transpose(-1, -2).flatten(0, 1), D.flatten(0, 1))
        if score:                                                                   # back through the width resize
            dL = torch.einsum("Xx,nhyXs->nhyxs", f["Mw"], dB.view(n, H, h, r, S)).reshape(n, H, h * w, S)
            dq[sl], dk[sl] = dL @ kT.transpose(-1, -2), q.transpose(-1, -2) @ dL
        else:                                                                       # back through the query resize
            dq[sl] = f["Mh"].T @ rearrange(dA, "n hd (y x) d -> n (hd d) y x", y=r) @ f["Mw"]
            dk[sl] = dB
    return out, dq, dk


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layer", default="medium", choices=list(LAYERS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip", nargs="+", default=[], help="rows to leave out, e.g. 'chunks,' (with --layer sd2 on a 24 GiB "
                    "CPU machine, autograd over a thousand chunks runs out of memory)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--clock", default="wall", choices=["wall", "process"],
                    help="wall clock, or this process's CPU time (user + sys: on one thread, without the waits for a shared core)")
    a = ap.parse_args(argv)
    clock = time.process_time if a.clock == "process" else time.perf_counter
    if a.threads: torch.set_num_threads(a.threads)
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
            "+ recompute (mvsk default)": lambda: token_softmax_maps(attn, x, ctx, (side, side), r),
            "+ views in groups of one (map_views=1)": lambda: token_softmax_maps(attn, x, ctx, (side, side), r, views=1)}
    g = torch.randn(a.views, r * r, c["T"], device=a.device)

    def timed(f):
        f(); sync()
        ts = []
        for _ in range(a.repeats):
            t0 = clock(); f(); sync(); ts.append(clock() - t0)
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
    first = next(n for n in rows if not any(k in n for k in a.skip))
    print(f"| variant | forward ms | × {first} | fwd+bwd ms | × {first} |")
    print("|---|---|---|---|---|")
    base_f = base_b = None
    for name, make in rows.items():
        if any(k in name for k in a.skip): continue
        with torch.no_grad(): tf = timed(make)
        tb = timed(fwd_bwd(make))
        base_f, base_b = base_f or tf, base_b or tb
        print(f"| {name} | {tf * 1e3:.1f} | {tf / base_f:.2f} | {tb * 1e3:.1f} | {tb / base_b:.2f} |", flush=True)
        if name.endswith("(mvsk default)"): mvsk_f, mvsk_b = tf, tb
        if "map_views=1" in name: v1_f, v1_b = tf, tb
    floor_f = floor_b = float("inf")
    f = floor_inputs(attn, x, ctx, (side, side), r)
    with torch.no_grad():
        m = token_softmax_maps(attn, x, ctx, (side, side), r)
        err = (floor_forward(f) - rearrange(m, "n t h w -> n (h w) t")).abs().max().item()
        floors = {"floor: softmax + head-mean alone": (lambda: softmax_floor(f), lambda: softmax_floor(f, g)),
                  "floor: scores + softmax + head-mean": (lambda: floor_forward(f), lambda: floor_fwd_bwd(f, g)),
                  "floor: the same, one view at a time": (lambda: floor_forward(f, 1), lambda: floor_fwd_bwd(f, g, 1))}
        for name, (fwd, fb) in floors.items():
            if any(k in name for k in a.skip): continue
            tf, tb = timed(fwd), timed(fb)
            print(f"| {name} | {tf * 1e3:.1f} | {tf / base_f:.2f} | {tb * 1e3:.1f} | {tb / base_b:.2f} |", flush=True)
            if "alone" not in name: floor_f, floor_b = min(tf, floor_f), min(tb, floor_b)
    if "mvsk_f" in locals() and floor_f < float("inf"):
        v1 = f"map_views=1 / floor: forward {v1_f / floor_f:.2f}, fwd+bwd {v1_b / floor_b:.2f}; " if "v1_f" in locals() else ""
        print(f"\nmvsk default / floor (scores + softmax + head-mean, the faster grouping): forward {mvsk_f / floor_f:.2f}, "
              f"fwd+bwd {mvsk_b / floor_b:.2f}; {v1}"
              f"the floor's maps differ from token_softmax_maps' by at most {err:.1e}")
    print(f"\ncommand: python bench/map_kernel.py --layer {a.layer} --device {a.device} --views {a.views} --repeats {a.repeats}"
          + (f" --threads {a.threads}" if a.threads else "") + (f" --clock {a.clock}" if a.clock != "wall" else "")
          + (f" --skip {' '.join(repr(k) for k in a.skip)}" if a.skip else ""))


if __name__ == "__main__":
    main()
