"""Opt-in (MVSK_FLAGS=slow): the SD2-size UNet (Zero123++'s block layout and widths, random weights).

Checks at full size what the notebooks check on the tiny model: the six views' maps have the right shape,
sum to one over tokens, and the early exit changes nothing."""
import os

import pytest
import torch

torch_device = os.environ.get("MVSK_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif("slow" not in os.environ.get("MVSK_FLAGS", "").split(),
                                reason="builds an 866 M-parameter UNet; run with MVSK_FLAGS=slow")


def test_sd2_size_keypoint_pass():
    from diffusers import UNet2DConditionModel, DDPMScheduler, EulerAncestralDiscreteScheduler
    from mvsk.attention import SKSettings
    from mvsk.models import SCHEDULER_CONFIG
    from mvsk.unet import RefOnlyNoisedUNet
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=40, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        block_out_channels=(320, 640, 1280, 1280)).requires_grad_(False)
    model = RefOnlyNoisedUNet(unet, DDPMScheduler.from_config(SCHEDULER_CONFIG),
                              EulerAncestralDiscreteScheduler.from_config(SCHEDULER_CONFIG), n_tokens=16,
                              sk=SKSettings(map_res=32)).to(torch_device)
    lat, cond, encoder_hidden_states = (torch.randn(*s).to(torch_device) for s in ((6, 4, 40, 40), (1, 4, 40, 40), (1, 77, 1024)))
    with torch.no_grad():
        a = model.forward_sk(lat, cond, encoder_hidden_states, generator=torch.Generator(torch_device).manual_seed(0))["sk_maps_mean"]
        b = model.forward_sk(lat, cond, encoder_hidden_states, early_exit=False, generator=torch.Generator(torch_device).manual_seed(0))["sk_maps_mean"]
    assert a["individual_views"].shape == (1, 6, 16, 32, 32) and a["grid_attention"].shape == (1, 16, 96, 64)
    torch.testing.assert_close(a["individual_views"].sum(2), torch.ones(1, 6, 32, 32, device=torch_device))
    assert torch.equal(a["individual_views"], b["individual_views"])
