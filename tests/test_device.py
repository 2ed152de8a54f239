"""The model paths on the best device present, as diffusers tests: CUDA when the machine has it, else the CPU
(`MVSK_TEST_DEVICE` overrides). Each runs in float32 and with the UNet alone in half precision (float16 on CUDA,
bfloat16 on the CPU, everything else float32): discovery with extraction and triangulation, the integrated
training, generation with every fusion strategy, evaluation, and the README's Python example.

A guard that needs no GPU runs everywhere: PyTorch's fake tensors make CUDA tensors on a CPU-only build and
refuse to mix them with CPU ones, so the device handling of the pure tensor code (the random affine's points,
the map helpers) is checked on the CPU too. The model paths themselves cannot run on fake tensors:
they check values at their boundaries (images in [0, 1], maps that sum to 1), and a fake tensor has no
values; those paths are checked on a real GPU by this file."""
import json, os, shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch_device = os.environ.get("MVSK_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
on_cuda = torch.device(torch_device).type == "cuda"
HALF = torch.float16 if on_cuda else torch.bfloat16
UNET_DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(HALF, id=str(HALF).split(".")[1])]


def _model(n_tokens=16, unet_dtype=torch.float32, map_res=16):
    from mvsk.attention import SKSettings
    from mvsk.models import load_zero123plus, tiny_zero123plus
    from mvsk.unet import RefOnlyNoisedUNet
    comp = load_zero123plus(tiny_zero123plus(seed=0), device=torch_device)
    comp.unet.to(unet_dtype)
    return RefOnlyNoisedUNet.from_components(comp, n_tokens=n_tokens, sk=SKSettings(map_res=map_res))


@pytest.fixture(scope="module")
def discovery_run(tmp_path_factory):
    "One short discovery on the device (fp32), shared by the tests that read a run."
    from mvsk.discovery import DiscoveryConfig, discover
    from mvsk.data import MultiViewDataset
    from mvsk.losses import LossConfig
    out = tmp_path_factory.mktemp("dev") / "run"
    cfg = DiscoveryConfig(n_tokens=16, n_keypoints=4, steps=2, batch_size=2, micro_batch=2, map_res=16, n_augment=2, n_select=2,
                          checkpoint_every=2, loss=LossConfig(top_k=4, n_candidates=8))
    data = MultiViewDataset(ROOT / "data" / "sample", objects=["a1_001", "minitaur_004"])
    res = discover(_model(), data, out, cfg, model_id="tiny", progress=False, pictures=False)
    return out, res


def test_discovery_runs_on_the_device(discovery_run):
    out, res = discovery_run
    assert json.loads((out / "config.json").read_text())["device"].startswith(torch.device(torch_device).type)
    assert (out / "tokens.safetensors").is_file() and len(res["tokens"]) == 4
    for r in res["keypoints"]:
        assert r["xy"].device.type == "cpu" and torch.isfinite(r["xy"]).all() and ((r["xy"] >= 0) & (r["xy"] <= 1)).all()


@pytest.mark.parametrize("unet_dtype", UNET_DTYPES)
def test_keypoint_step_and_extraction(unet_dtype):
    "sk_step's losses, their gradient on the fp32 tokens, and test-time-augmented extraction, with the UNet in `unet_dtype`."
    from mvsk.data import load_views
    from mvsk.keypoints import extract_keypoints
    from mvsk.losses import LossConfig, RandomAffine
    from mvsk.models import encode_condition_image, global_embeddings
    model = _model(unet_dtype=unet_dtype)
    obj = load_views(ROOT / "data" / "sample" / "a1_001")
    g = torch.Generator(device=torch_device).manual_seed(0)
    cond = obj["cond_imgs"].to(torch_device)
    cond_lat = encode_condition_image(model.components, cond, generator=g)["cond_lat"]
    states = global_embeddings(model.components, cond)
    views = obj["target_imgs"][None].to(torch_device)
    out = model.sk_step(views, obj["cameras"].to(device=torch_device), cond_lat, states, epoch=100, generator=g,
                        loss_cfg=LossConfig(top_k=4, n_candidates=8))
    maps = out["sk_maps_mean"]["individual_views"]
    assert maps.dtype == torch.float32 and maps.device.type == torch.device(torch_device).type
    torch.testing.assert_close(maps.sum(2), torch.ones_like(maps.sum(2)), atol=1e-4, rtol=0)
    out["sk_loss"]["total"].backward()
    grad = model.tokens.embeddings.grad
    assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0

    def maps_fn(imgs):
        return model.forward_sk(imgs.view(1, 6, *imgs.shape[1:]), cond_lat, states, generator=g)["sk_maps_mean"]["individual_views"][0]
    with torch.no_grad():
        kp = extract_keypoints(views[0], maps_fn, torch.arange(4), n_augment=2, affine=RandomAffine(generator=torch.Generator().manual_seed(0)))
    assert kp["xy"].shape == (6, 4, 2) and torch.isfinite(kp["xy"]).all()


@pytest.mark.parametrize("unet_dtype", UNET_DTYPES)
def test_generation_with_every_strategy(discovery_run, unet_dtype):
    "generate with tokens read from a file (on the CPU) and every fusion strategy; the gated ones with open gates."
    from PIL import Image
    from mvsk.fusion import STRATEGIES, HierarchicalGates
    from mvsk.pipeline import generate
    from mvsk.unet import KeypointTokens
    out, _ = discovery_run
    model = _model(unet_dtype=unet_dtype)
    tokens = KeypointTokens.load(out / "tokens.safetensors")                      # on the CPU, as read
    gates = HierarchicalGates.for_model(model, gamma=0.5).to(torch_device)
    image = Image.open(ROOT / "data" / "sample" / "a1_001" / "000.png")
    names = list(STRATEGIES) if on_cuda or unet_dtype == torch.float32 else ["none", "spatial", "hierarchical"]   # CPU time
    for name in names:
        find = name == "spatial"                                                  # one extraction is enough to check
        res = generate(model, image, tokens=tokens, gates=gates if STRATEGIES[name].uses_gates else None, generator=0,
                       num_inference_steps=2, n_augment=1, find_keypoints=find, progress=False, strategy=name)
        assert torch.isfinite(res.views).all() and res.views.min() >= 0 and res.views.max() <= 1, name
        if name != "none": assert res.sk_steps == [1] and res.maps.device == model.device, name
        if find: assert torch.isfinite(res.keypoints["xy"]).all()


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_training_on_the_device(tmp_path, mixed_precision):
    "The integrated training on the device, after an Accelerator(cpu=True) was made in the same process."
    from accelerate import Accelerator
    from mvsk.data import MultiViewDataset
    from mvsk.losses import LossConfig
    from mvsk.train import TrainConfig, train
    Accelerator(cpu=True)
    model = _model()
    tok0 = model.tokens.embeddings.detach().clone()
    cfg = TrainConfig(steps=1, batch_size=1, map_res=16, n_augment=1, n_select=1, checkpoint_every=1, mixed_precision=mixed_precision,
                      loss=LossConfig(top_k=4, n_candidates=8, keypoint_ramp_epochs=0))
    res = train(model, MultiViewDataset(ROOT / "data" / "sample", objects=["a1_001"]), tmp_path / "train", cfg, model_id="tiny",
                progress=False, pictures=False)
    assert model.device.type == torch.device(torch_device).type and res["gates"].gamma.device == model.device
    assert all(torch.isfinite(torch.tensor(v)) for k, v in res["history"][0].items() if isinstance(v, float))
    assert not torch.equal(model.tokens.embeddings.detach(), tok0)


def test_evaluation_of_a_device_run(discovery_run, tmp_path):
    from mvsk.commands import eval_cmd
    out, _ = discovery_run
    ev = eval_cmd(out, ROOT / "data" / "sample", tmp_path / "report")
    assert (tmp_path / "report" / "report.md").is_file() and ev["ground_truth"]


def test_readme_python_example():
    "README's example, with the whole model on the device in half precision where that is CUDA."
    from mvsk.data import load_views
    from mvsk.models import load_zero123plus, tiny_zero123plus, encode_condition_image, global_embeddings
    from mvsk.unet import RefOnlyNoisedUNet
    comp = load_zero123plus(tiny_zero123plus(), dtype=torch.float16 if on_cuda else torch.float32, device=torch_device)
    obj = load_views(ROOT / "data" / "sample" / "laikago_000")
    model = RefOnlyNoisedUNet.from_components(comp, n_tokens=64)
    cond = encode_condition_image(comp, obj["cond_imgs"])
    out = model.forward_sk(obj["target_imgs"][None], cond["cond_lat"], global_embeddings(comp, obj["cond_imgs"]))
    assert out["sk_maps_mean"]["individual_views"].shape == (1, 6, 64, 128, 128)
    assert out["sk_maps_mean"]["grid_attention"].shape == (1, 64, 384, 256)


@pytest.mark.skipif(not on_cuda, reason="needs a CUDA device: a CPU generator is refused only for CUDA tensors")
def test_cpu_generators_refused_on_cuda():
    model = _model()
    lat = torch.randn(6, 4, 16, 16, device=torch_device)
    with pytest.raises(ValueError, match="torch.Generator\\(device='cuda'\\)"):
        model.forward_sk(lat, reference=False, generator=torch.Generator())


def _without_mixing(fn):
    "Run `fn` on fake tensors: it passes when it ends, or when it reaches a same-device CUDA op that a CPU-only build cannot fake (matmul, grid_sample: 'not linked with support for cuda devices'); mixing devices raises first."
    try:
        return fn()
    except RuntimeError as e:                            # a device mismatch is re-raised with everything else
        if "not linked with support for cuda devices" not in str(e): raise


def test_fake_cuda_guard():
    "On any machine: the pure tensor code keeps fake CUDA tensors on CUDA (a stray CPU tensor raises on mixing)."
    from torch._subclasses.fake_tensor import FakeTensorMode
    from mvsk.losses import RandomAffine
    from mvsk.maps import argmax_gaussian, gaussian_maps, soft_argmax_xy
    cuda = "cuda:0"                                      # an index: a bare 'cuda' needs a real device under fake tensors
    aff = RandomAffine(generator=torch.Generator().manual_seed(0)).sample(12)     # its matrices live on the CPU
    with FakeTensorMode(allow_non_fake_inputs=True):
        maps = torch.rand(2, 6, 3, 16, 16, device=cuda)
        xy = torch.rand(12, 3, 2, device=cuda)
        for fn in (lambda: aff.points(xy), lambda: aff.inverse_points(xy), lambda: gaussian_maps(xy, 16, 2.0),
                   lambda: argmax_gaussian(maps, 2.0), lambda: soft_argmax_xy(maps, 3)):
            _without_mixing(fn)
        with pytest.raises(RuntimeError, match="two (different )?devices"):       # the guard is live: mixing raises (torch 2.13
                                                                                  # names it 'at least two devices', older 'two different')
            _without_mixing(lambda: xy.double() @ torch.eye(2, dtype=torch.float64))


def test_tokens_are_made_where_the_unet_is():
    "RefOnlyNoisedUNet makes its tokens on the UNet's device (here the meta device stands in for a GPU) and refuses others."
    from mvsk.unet import RefOnlyNoisedUNet
    from mvsk.attention import SKSettings
    model = _model()
    meta = RefOnlyNoisedUNet(model.unet.to("meta"), model.train_sched, model.val_sched, n_tokens=8, sk=SKSettings(map_res=16))
    assert meta.tokens.embeddings.device.type == "meta"
    cpu = _model()
    with pytest.raises(ValueError, match="tokens are on meta but the UNet is on"):
        cpu.forward_sk(torch.randn(6, 4, 16, 16, device=cpu.device), reference=False,
                       tokens=torch.randn(16, cpu.unet.config.cross_attention_dim, device="meta"))


def test_evaluation_helpers_on_the_device():
    "The metrics take keypoints on the device and give what the same call gives on the CPU."
    from mvsk.cameras import zero123plus_cameras
    from mvsk.eval import centroid_keypoints, keypoint_spread, regressor_fit, reprojection_error
    g, d = torch.Generator().manual_seed(0), torch.device(torch_device)
    xy, masks = torch.rand(2, 6, 5, 2, generator=g), torch.rand(2, 6, 16, 16, generator=g) > 0.5
    x, y, vis = torch.rand(8, 4, 2, generator=g), torch.rand(8, 3, 2, generator=g), torch.rand(8, 3, generator=g) > 0.2
    vis[0] = True                                                    # every gt keypoint visible somewhere
    cams = zero123plus_cameras()
    calls = {keypoint_spread: ((xy,), (xy.to(d),)), centroid_keypoints: ((masks, 3), (masks.to(d), 3)),
             regressor_fit: ((x, y, vis), (x.to(d), y.to(d), vis.to(d))),
             reprojection_error: ((xy, cams), (xy.to(d), cams.to(device=d)))}
    for f, (on_cpu, on_dev) in calls.items():
        out = f(*on_dev)
        assert out.device.type == d.type, f.__name__
        torch.testing.assert_close(out.cpu(), f(*on_cpu), atol=1e-5, rtol=1e-5, equal_nan=True)


def test_cpu_checkpoint_resumes_on_the_device(tmp_path, full_fp32):
    "A discovery checkpointed on the CPU finishes on the device, reproducibly (on the CPU: bit for bit as one run)."
    from mvsk.discovery import DiscoveryConfig, discover
    from mvsk.data import MultiViewDataset
    from mvsk.losses import LossConfig
    from mvsk.attention import SKSettings
    from mvsk.models import load_zero123plus, tiny_zero123plus
    from mvsk.unet import RefOnlyNoisedUNet
    cfg = DiscoveryConfig(n_tokens=16, n_keypoints=4, steps=2, batch_size=1, map_res=16, n_augment=1, n_select=1, checkpoint_every=1,
                          loss=LossConfig(top_k=4, n_candidates=8))
    data = MultiViewDataset(ROOT / "data" / "sample", objects=["a1_001"])
    cpu = RefOnlyNoisedUNet.from_components(load_zero123plus(tiny_zero123plus(seed=0)), n_tokens=16, sk=SKSettings(map_res=16))

    def stop(step, rec):
        if step == 1: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        discover(cpu, data, tmp_path / "run", cfg, progress=False, pictures=False, callback=stop)
    ends = []
    for k in range(2):
        run = tmp_path / f"run{k}"
        shutil.copytree(tmp_path / "run", run)
        discover(_model(), data, run, cfg, resume=True, progress=False, pictures=False)
        ends.append(torch.load(run / "checkpoint.pt", weights_only=False)["tokens"])
    assert torch.isfinite(ends[0]).all()
    start = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["tokens"]
    if on_cuda: _same_update(start, ends[0], ends[1])           # CUDA's atomic sums are not bit-reproducible
    else: assert torch.equal(ends[0], ends[1])
    if not on_cuda:
        straight = discover(_model(), data, tmp_path / "straight", cfg, progress=False, pictures=False)
        assert torch.equal(torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)["tokens"], ends[0])


def _same_update(start, a, b, tol=1e-2):
    "Two runs from `start` ended at `a` and `b`: their updates agree to `tol` in relative L2 (a different draw gives about 1)."
    da, db = (a.float() - start.float()).flatten(), (b.float() - start.float()).flatten()
    assert da.norm() > 0, "the run did not move"
    assert (da - db).norm() <= tol * da.norm(), f"updates differ by {float((da - db).norm() / da.norm()):.2e} of their size"


@pytest.fixture
def full_fp32():
    "CUDA's TF32 off for the test: Adam's first steps turn a rounding change in a near-zero gradient into a full step."
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_mini_training_on_the_device(tmp_path, full_fp32):
    "train_unet on the device draws the CPU run's batches and noise (the recipe's clean reference): the same losses, close weights; a CPU checkpoint finishes there alike."
    from dataclasses import replace
    from mvsk.mini import MiniConfig, encode_split, train_unet
    from mvsk.models import load_zero123plus, tiny_zero123plus
    load = lambda device="cpu": replace(load_zero123plus(tiny_zero123plus(seed=0), device=device), reference_latent="clean")
    cfg = lambda steps: MiniConfig(steps=steps, batch_size=2, warmup=2, checkpoint_every=2)
    cpu, dev = load(), load(torch_device)
    S = cpu.view_size
    imgs = torch.rand(3, 6, 3, S, S, generator=torch.Generator().manual_seed(0))
    data = encode_split(cpu, dict(cond=imgs[:, 0], views=imgs), progress=False)
    w0 = torch.cat([p.detach().flatten() for p in cpu.unet.parameters()])
    a = train_unet(cpu, data, tmp_path / "cpu", cfg(2), progress=False)
    b = train_unet(dev, data, tmp_path / "dev", cfg(2), progress=False)             # both train their comp.unet in place
    assert next(b["ema"].parameters()).device.type == torch.device(torch_device).type

    def alike(ra, rb):                                                                 # the same batch, noise and timesteps
        assert ra["t_mean"] == rb["t_mean"] and abs(ra["loss"] - rb["loss"]) <= 1e-3 * abs(ra["loss"]), (ra, rb)
    for ra, rb in zip(a["history"], b["history"]): alike(ra, rb)
    _same_update(w0, *(torch.cat([p.detach().cpu().flatten() for p in c.unet.parameters()]) for c in (cpu, dev)))
    shutil.copytree(tmp_path / "cpu", tmp_path / "cross")
    c = train_unet(load(), data, tmp_path / "cpu", cfg(3), resume=True, progress=False)
    d = train_unet(load(torch_device), data, tmp_path / "cross", cfg(3), resume=True, progress=False)
    assert c["step"] == d["step"] == 3 and len(d["history"]) == 3
    alike(c["history"][2], d["history"][2])
