"""Properties of the model registry, every registered model, and heatmap decoding."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download weights

import pytest
import torch

from kpcore.errors import ConfigError
from kpcore.models import (
    cells_to_normalized,
    count_parameters,
    create_model,
    describe_models,
    list_models,
    model_info,
    normalized_to_cells,
    register_model,
    render_gaussian_heatmaps,
    soft_argmax,
)
from kpcore.training.losses import create_loss, pixel_scale

SMALL_SIZE = (64, 48)  # (W, H): small and not square, to catch W/H mix-ups
K = 5


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------- registry
def test_required_models_are_registered() -> None:
    names = list_models()
    for required in ("nosenet", "facenet", "resnet18", "timm_resnet18"):
        assert required in names
    assert any(n.endswith("_heatmap") for n in names)
    assert names == sorted(names)


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="unknown model 'nosnet'") as e:
        create_model("nosnet")
    for name in list_models():
        assert name in str(e.value)
    with pytest.raises(ConfigError, match="known"):
        model_info("nosnet")
    assert isinstance(e.value, ValueError)  # catchable with ordinary idioms


def test_duplicate_registration_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="already registered") as e:
        register_model("nosenet", description="x", default_input_size=(8, 8))(lambda **kw: None)
    assert "facenet" in str(e.value)


def test_unknown_option_lists_accepted_ones() -> None:
    with pytest.raises(ConfigError, match="kernel_size"):
        create_model("nosenet", kernelsize=7)


@pytest.mark.parametrize(
    "bad",
    [
        {"num_keypoints": 0},
        {"in_channels": 0},
        {"kernel_size": 4},
        {"channels": (8, 8)},
        {"input_size": (4, 4)},
    ],
)
def test_bad_values_raise_config_error(bad: dict) -> None:
    with pytest.raises(ConfigError):
        create_model("nosenet", **bad)


def test_model_info_and_describe() -> None:
    rows = describe_models(num_keypoints=68, in_channels=1)
    assert [r["name"] for r in rows] == list_models()
    for row in rows:
        info = model_info(row["name"])
        assert set(info) == {"name", "description", "default_input_size", "kind"}
        assert info["kind"] in ("regression", "heatmap")
        assert info["kind"] == ("heatmap" if row["name"].endswith("_heatmap") else "regression")
        w, h = info["default_input_size"]
        assert w > 0 and h > 0
        assert row["params"] > 0 and row["default_input_size"] == [w, h]
    # meta-device counting agrees with a real instantiation
    nosenet_row = next(r for r in rows if r["name"] == "nosenet")
    assert nosenet_row["params"] == count_parameters(create_model("nosenet", num_keypoints=68))


# ----------------------------------------------------------------- every model
@pytest.mark.parametrize("name", list_models())
def test_forward_every_model(name: str) -> None:
    model = create_model(name, num_keypoints=K, in_channels=1).eval()
    assert model.num_keypoints == K and model.in_channels == 1
    w, h = SMALL_SIZE
    x = torch.randn(2, 1, h, w)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, K, 2) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert y.abs().max() < 1.5  # a fresh model predicts near the centre
    if model_info(name)["kind"] == "heatmap":
        with torch.no_grad():
            coords, logits = model.forward_heatmaps(x)
        s = model.heatmap_stride
        assert logits.shape == (2, K, h // s, w // s)
        assert torch.allclose(coords, y) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list_models())
def test_config_rebuilds_same_architecture(name: str) -> None:
    model = create_model(name, num_keypoints=3, in_channels=3)
    cfg = model.kpcore_config
    assert (
        cfg["name"] == name
        and cfg["kwargs"]["num_keypoints"] == 3
        and cfg["kwargs"]["in_channels"] == 3
    )
    again = create_model(cfg["name"], **cfg["kwargs"])
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}
    again.load_state_dict(model.state_dict())


def test_backward_every_model_is_finite() -> None:
    w, h = SMALL_SIZE
    for name in list_models():
        model = create_model(name, num_keypoints=2, in_channels=1).train()
        model(torch.randn(2, 1, h, w)).square().sum().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name


@pytest.mark.parametrize("kernel_size", [5, 7])
def test_nosenet_kernel_sizes_and_any_input_size(kernel_size: int) -> None:
    model = create_model(
        "nosenet", num_keypoints=1, kernel_size=kernel_size, channels=(8, 16, 16), hidden=32
    )
    assert model.features[0].kernel_size == (kernel_size, kernel_size)
    for w, h in [(80, 60), (96, 72), (40, 30)]:
        assert model(torch.zeros(1, 1, h, w)).shape == (1, 1, 2)


# --------------------------------------------------------------- soft-argmax
def test_soft_argmax_decodes_rendered_gaussians() -> None:
    w, h = 24, 16
    cells = torch.tensor([[[3.3, 4.7], [12.0, 8.25], [20.6, 11.1]]])  # sub-cell (x, y)
    coords = cells_to_normalized(cells, (w, h))
    logits = render_gaussian_heatmaps(coords, (w, h), sigma=1.5).clamp_min(1e-30).log()
    decoded = normalized_to_cells(soft_argmax(logits), (w, h))
    assert (decoded - cells).abs().max() < 0.1


def test_soft_argmax_uses_cell_centres_align_corners_false() -> None:
    w, h, s = 8, 6, 4  # heatmap grid and stride; input is 32 x 24
    logits = torch.full((1, 1, h, w), -1e4)
    logits[0, 0, 2, 5] = 0.0  # row 2, column 5
    u = soft_argmax(logits)[0, 0]
    assert torch.allclose(u, torch.tensor([(2 * 5 + 1) / w - 1, (2 * 2 + 1) / h - 1]))
    # In input pixels (x = ((u + 1) W - 1) / 2) that is the centre of the cell's pixel block.
    x_px = ((u[0] + 1) * w * s - 1) / 2
    y_px = ((u[1] + 1) * h * s - 1) / 2
    assert torch.allclose(
        torch.stack((x_px, y_px)), torch.tensor([5 * s + (s - 1) / 2, 2 * s + (s - 1) / 2])
    )


def test_cell_conversion_round_trip() -> None:
    u = torch.rand(3, 4, 2) * 2 - 1
    assert torch.allclose(
        cells_to_normalized(normalized_to_cells(u, (10, 7)), (10, 7)), u, atol=1e-6
    )


# --------------------------------------------------------------------- overfit
def _blob_batch(
    n: int, k: int, size: tuple[int, int], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images with a bright Gaussian blob under each of ``k`` points, and the points."""
    g = torch.Generator().manual_seed(seed)
    w, h = size
    target = torch.rand(n, k, 2, generator=g) * 1.2 - 0.6
    img = render_gaussian_heatmaps(target, (w, h), sigma=2.0).amax(dim=1, keepdim=True)
    return img * 2 - 1, target


def _overfit(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    loss_name: str,
    max_steps: int,
    lr: float,
) -> tuple[float, float]:
    """Train on one batch until the loss is 10x below its first value (or ``max_steps``)."""
    loss_fn = create_loss(loss_name)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    first = last = float("nan")
    for step in range(max_steps):
        if loss_fn.needs_heatmaps:
            coords, heatmaps = model.forward_heatmaps(x)
            loss = loss_fn(coords, target, heatmaps=heatmaps)
        else:
            loss = loss_fn(model(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        last = loss.item()
        if step == 0:
            first = last
        elif last < first / 10:
            break
    return first, last


def test_nosenet_overfits_tiny_batch() -> None:
    x, target = _blob_batch(4, 1, (80, 60))
    model = create_model("nosenet", num_keypoints=1)
    first, last = _overfit(model, x, target, "mse", max_steps=300, lr=1e-3)
    assert last < first / 10, (first, last)


def test_heatmap_model_overfits_tiny_batch() -> None:
    x, target = _blob_batch(4, 2, (32, 32))
    model = create_model("unet_heatmap", num_keypoints=2, channels=(8, 16, 16, 16))
    first, last = _overfit(model, x, target, "l1", max_steps=300, lr=3e-3)
    assert last < first / 10, (first, last)


@pytest.mark.slow
def test_resnet18_heatmap_overfits_tiny_batch() -> None:
    x, target = _blob_batch(4, 2, (32, 32))
    model = create_model("resnet18_heatmap", num_keypoints=2, head_channels=32)
    first, last = _overfit(model, x, target, "l1", max_steps=300, lr=1e-3)
    assert last < first / 10, (first, last)


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", ["heatmap_mse", "adaptive_wing", "integral"])
def test_heatmap_losses_train_accurate_points(loss_name: str) -> None:
    size = (32, 32)
    x, target = _blob_batch(4, 2, size)
    model = create_model("unet_heatmap", num_keypoints=2, channels=(8, 16, 16, 16)).train()
    loss_fn = create_loss(loss_name, scale=pixel_scale(size))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        coords, heatmaps = model.forward_heatmaps(x)
        loss = loss_fn(coords, target, heatmaps=heatmaps)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        err_px = ((model(x) - target) * torch.tensor(pixel_scale(size))).norm(dim=-1).mean()
    assert err_px < 1.0, err_px


# ------------------------------------------------------------- timm weights
def _random_timm_resnet18_file(tmp_path, suffix: str) -> tuple[str, dict[str, torch.Tensor]]:
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("resnet18", pretrained=False, in_chans=3, num_classes=1000)
    with torch.no_grad():
        for p in src.parameters():  # make the weights recognisable
            p.add_(torch.randn_like(p))
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return str(path), state


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_pretrained_file_round_trip(tmp_path, suffix: str) -> None:
    path, src = _random_timm_resnet18_file(tmp_path, suffix)
    model = create_model("timm_resnet18", num_keypoints=K, in_channels=1, pretrained_file=path)
    got = model.net.state_dict()
    assert torch.equal(got["layer3.1.conv2.weight"], src["layer3.1.conv2.weight"])
    assert torch.equal(got["bn1.running_var"], src["bn1.running_var"])
    # 3-channel stem adapted to 1 channel by summing over RGB
    assert got["conv1.weight"].shape == (64, 1, 7, 7)
    assert torch.allclose(got["conv1.weight"], src["conv1.weight"].sum(dim=1, keepdim=True))
    # 1000-class classifier dropped for a 2K head
    assert got["fc.weight"].shape == (2 * K, 512)
    assert "pretrained" not in model.kpcore_config["kwargs"]
    assert "pretrained_file" not in model.kpcore_config["kwargs"]


def test_heatmap_backbone_pretrained_file(tmp_path) -> None:
    path, src = _random_timm_resnet18_file(tmp_path, ".safetensors")
    model = create_model("resnet18_heatmap", num_keypoints=K, in_channels=1, pretrained_file=path)
    got = model.backbone.state_dict()
    assert torch.equal(got["layer4.0.conv1.weight"], src["layer4.0.conv1.weight"])
    assert torch.allclose(got["conv1.weight"], src["conv1.weight"].sum(dim=1, keepdim=True))


def test_missing_pretrained_file_says_what_to_do(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        create_model("timm_resnet18", pretrained_file=str(tmp_path / "nope.safetensors"))
