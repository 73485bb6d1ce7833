"""The model registry and backbones: shapes, channels-last, the paper's size, strict loading of 3DDFA-V2's mb05,
and the MAC counter on a model small enough to count by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from cli.main import app
from r3fa.models import available, create
from r3fa.models.mobilenet_v1 import load_3ddfa_v2_state_dict, widen_factor_of
from r3fa.models.summary import count_macs, count_params, summarise

NAMES = ["mobdensenet", "mobilenet_v2", "densenet121", "resnext50_32x4d", "mobilenet_v1"]


def test_registry_lists_every_model_and_rejects_unknown_names():
    assert available() == NAMES
    with pytest.raises(ValueError, match="unknown model"):
        create("vgg16")


@pytest.mark.parametrize("name", NAMES)
def test_output_is_62_and_channels_last_gives_the_same_numbers(name: str):
    torch.manual_seed(0)
    model = create(name).eval()
    x = torch.randn(1, 3, 120, 120)
    with torch.no_grad():
        out = model(x)
        out_cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert out.shape == (1, 62) and torch.isfinite(out).all()
    torch.testing.assert_close(out_cl, out, rtol=1e-4, atol=1e-4)


def test_mobdensenet_is_fully_convolutional_and_near_the_papers_size():
    model = create("mobdensenet")
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert abs(count_params(model) - 10.9e6) / 10.9e6 < 0.10


def test_mobilenet_v1_loads_the_released_mb05_weights_strictly(data_root: Path):
    payload = torch.load(data_root / "3ddfa_v2/weights/mb05_120x120.pth", map_location="cpu", weights_only=True)
    state = load_3ddfa_v2_state_dict(payload)
    assert all(not k.startswith("module.") for k in state)
    assert widen_factor_of(state) == 0.5
    model = create("mobilenet_v1", widen_factor=0.5)
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    wide = create("mobilenet_v1", widen_factor=1.0).state_dict()
    assert wide.keys() == state.keys() and wide["fc_param.weight"].shape == (62, 1024)


def test_macs_of_a_model_counted_by_hand():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )
    # 120*120 outputs x 4 maps x 3*3*3 taps; 60*60 x 4 x 1*3*3 (depthwise); 4*2
    assert count_macs(model, 120) == 120 * 120 * 4 * 27 + 60 * 60 * 4 * 9 + 8
    assert summarise(model) == {"params": 3 * 4 * 9 + 4 + 4 * 9 + 4 + 8 + 2, "macs": count_macs(model), "output_dim": 2}


def test_model_summary_command_prints_json():
    result = CliRunner().invoke(app, ["model", "summary", "mobilenet_v1", "--kw", "widen_factor=0.5", "--format", "json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["output_dim"] == 62 and info["params"] == 920166 and 40e6 < info["macs"] < 55e6
    bad = CliRunner().invoke(app, ["model", "summary", "nope"])
    assert bad.exit_code != 0 and "unknown model" in bad.output
