"Wrong inputs at the public boundaries raise errors that name what was expected and what came."
import json
from pathlib import Path

import pytest
import torch

from mvsk.grid import views_to_grid, grid_to_views, tokens_to_views
from mvsk.cameras import zero123plus_cameras, project, triangulate
from mvsk.models import load_zero123plus, tiny_zero123plus, encode_target_images, encode_condition_image
from mvsk.unet import RefOnlyNoisedUNet, KeypointTokens
from mvsk.attention import SKSettings


@pytest.fixture(scope="module")
def comp():
    return load_zero123plus(tiny_zero123plus(seed=0))


@pytest.mark.parametrize("fn,arg,words", [
    (views_to_grid, torch.zeros(1, 5, 3, 8, 8), ["6 views", "(1, 5, 3, 8, 8)"]),
    (grid_to_views, torch.zeros(1, 3, 10, 8), ["divisible by 3", "(1, 3, 10, 8)"]),
])
def test_grid_shapes(fn, arg, words):
    with pytest.raises(ValueError) as e: fn(arg)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_tokens_to_views_names_the_layer():
    with pytest.raises(ValueError, match=r"\(H, W\)=\(30, 20\).*got \(1, 599, 4\)"):
        tokens_to_views(torch.zeros(1, 599, 4), (30, 20))


def test_cameras_reject_mismatched_points():
    cams = zero123plus_cameras()
    with pytest.raises(ValueError): project(torch.zeros(5, 2), cams)
    with pytest.raises(ValueError): triangulate(torch.zeros(5, 3, 2), cams)


def test_encoders_reject_bad_images(comp):
    S = comp.view_size
    with pytest.raises(ValueError, match="got \\(1, 4, 3"): encode_target_images(comp, torch.rand(1, 4, 3, S, S))
    with pytest.raises(ValueError, match="square"): encode_target_images(comp, torch.rand(1, 6, 3, S, S - 8))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"): encode_target_images(comp, torch.rand(1, 6, 3, S, S) + 1)
    from PIL import Image
    with pytest.raises(ValueError, match="'P'"): encode_condition_image(comp, Image.new("P", (S, S)))


def test_loader_names_the_missing_component(tmp_path):
    src = tiny_zero123plus(seed=0)
    import shutil
    shutil.copytree(src, tmp_path / "m")
    shutil.rmtree(tmp_path / "m" / "vision_encoder")
    with pytest.raises(FileNotFoundError, match="vision_encoder"): load_zero123plus(tmp_path / "m")


def test_keypoint_pass_inputs(comp):
    model = RefOnlyNoisedUNet.from_components(comp, n_tokens=8, sk=SKSettings(map_res=8))
    lat = torch.randn(6, 4, 16, 16)
    with pytest.raises(ValueError, match="to match the UNet"): model.forward_sk(lat, reference=False, tokens=torch.randn(8, 5))
    with pytest.raises(ValueError, match="unknown cross-attention layer"): model.forward_sk(lat, reference=False, layers=("mid",))
    with pytest.raises(ValueError, match="B=1"): model.forward_sk(lat, torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32))
    with pytest.raises(ValueError, match="context must be"): SKSettings(context="prepend")
    with pytest.raises(ValueError, match="distinct"): KeypointTokens(4, 8).select([0, 0])
