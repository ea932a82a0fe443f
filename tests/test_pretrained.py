"""Pretrained trunks come through torchvision's weights API (offline from $TORCH_HOME here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from kpcore.errors import ConfigError, HubError
from kpcore.models import create_model

WEIGHTS = Path(os.environ.get("TORCH_HOME", "")) / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"


@pytest.mark.skipif(not WEIGHTS.exists(), reason="ImageNet MobileNetV2 weights not under $TORCH_HOME")
def test_mobilenet_trunk_starts_from_the_imagenet_weights():
    ref = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    rgb = create_model("mobilenetv2_heatmap", 68, 3, pretrained="IMAGENET1K_V1")
    torch.testing.assert_close(rgb.backbone.stages[0][0][0].weight, ref["features.0.0.weight"])
    torch.testing.assert_close(rgb.backbone.stages[3][-1].conv[2].weight, ref["features.17.conv.2.weight"])
    gray = create_model("mobilenetv2_heatmap", 68, 1, pretrained="IMAGENET1K_V1")
    # a gray image through summed filters = the same image in RGB through the originals
    x = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(gray.backbone.stages[0][0][0](x), rgb.backbone.stages[0][0][0](x.repeat(1, 3, 1, 1)))
    # pretrained is an init-only option: the checkpoint config does not depend on the file
    assert "pretrained" not in rgb.kpcore_config["kwargs"]


def test_missing_weights_say_where_they_are_looked_for(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    import torch.hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(HubError, match="TORCH_HOME"):
        create_model("mobilenetv2_heatmap", 68, 3, pretrained="IMAGENET1K_V1")
    with pytest.raises(ConfigError, match="weights name"):
        create_model("mobilenetv2_heatmap", 68, 3, pretrained="NOT_A_WEIGHTS_NAME")


def test_pretrained_on_a_model_without_that_option_is_a_config_error():
    from kpcore.training.config import TrainConfig
    from kpcore.training.train import build_model

    cfg = TrainConfig.from_dict({"task": "imm_nose", "model": {"name": "nosenet", "pretrained": "IMAGENET1K_V1"}})
    with pytest.raises(ConfigError, match="model.pretrained"):
        build_model(cfg, 1)
