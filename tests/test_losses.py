"""Properties of the training losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kpcore.errors import ConfigError
from kpcore.models import cells_to_normalized, render_gaussian_heatmaps
from kpcore.training.losses import (
    AWING_THETA,
    adaptive_wing,
    create_loss,
    list_losses,
    pixel_scale,
    wing,
)

B, K, HM = 3, 4, (16, 12)  # batch, points, heatmap (w, h)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _coords() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(B, K, 2) * 1.6 - 0.8, torch.rand(B, K, 2) * 1.6 - 0.8


def _build(name: str):
    return create_loss(name, scale=pixel_scale((64, 48)))


# ------------------------------------------------------------------- registry
def test_registry_names() -> None:
    names = list_losses()
    for required in ("mse", "l1", "smooth_l1", "wing", "adaptive_wing", "heatmap_mse", "integral"):
        assert required in names


def test_unknown_loss_lists_known_names() -> None:
    with pytest.raises(ConfigError, match="unknown loss 'wingg'") as e:
        create_loss("wingg")
    for name in list_losses():
        assert name in str(e.value)


def test_unknown_option_lists_accepted_ones() -> None:
    with pytest.raises(ConfigError, match="beta"):
        create_loss("smooth_l1", betta=0.1)


def test_wing_without_scale_says_how_to_set_it() -> None:
    with pytest.raises(ConfigError, match="pixel_scale"):
        create_loss("wing")


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_scalar_finite_with_gradients(name: str) -> None:
    loss_fn = _build(name)
    pred, target = _coords()
    pred.requires_grad_(True)
    heatmaps = torch.randn(B, K, HM[1], HM[0], requires_grad=True)
    value = loss_fn(pred, target, heatmaps=heatmaps if loss_fn.needs_heatmaps else None)
    assert value.ndim == 0 and torch.isfinite(value) and value.item() >= 0
    value.backward()
    grads = [g for g in (pred.grad, heatmaps.grad) if g is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_masked_points_are_ignored(name: str) -> None:
    loss_fn = _build(name)
    pred, target = _coords()
    heatmaps = torch.randn(B, K, HM[1], HM[0])
    mask = torch.ones(B, K)
    mask[:, 0] = 0
    base = loss_fn(pred, target, mask, heatmaps=heatmaps)
    pred2, heatmaps2 = pred.clone(), heatmaps.clone()
    pred2[:, 0] += 0.5
    heatmaps2[:, 0] = torch.randn(B, HM[1], HM[0]) * 5
    assert torch.allclose(base, loss_fn(pred2, target, mask, heatmaps=heatmaps2))
    assert loss_fn(pred, target, torch.zeros(B, K), heatmaps=heatmaps).item() == 0.0  # no NaN


def test_heatmap_losses_need_heatmaps() -> None:
    pred, target = _coords()
    for name in list_losses():
        loss_fn = create_loss(name, scale=1.0) if name != "wing" else create_loss(name, scale=32.0)
        if loss_fn.needs_heatmaps:
            with pytest.raises(ConfigError, match="forward_heatmaps"):
                loss_fn(pred, target)
    assert create_loss("adaptive_wing").needs_heatmaps
    assert not create_loss("mse").needs_heatmaps
    assert create_loss("integral").needs_heatmaps
    assert not create_loss("integral", heatmap_weight=0).needs_heatmaps


# -------------------------------------------------------------- coordinates
def test_mse_l1_smooth_l1_match_torch() -> None:
    pred, target = _coords()
    assert torch.allclose(create_loss("mse")(pred, target), F.mse_loss(pred, target))
    assert torch.allclose(create_loss("l1")(pred, target), F.l1_loss(pred, target))
    assert torch.allclose(
        create_loss("smooth_l1", beta=0.1)(pred, target), F.smooth_l1_loss(pred, target, beta=0.1)
    )


def _wing_formula(x: float, w: float = 10.0, eps: float = 2.0) -> float:
    c = w - w * math.log(1 + w / eps)
    return w * math.log(1 + abs(x) / eps) if abs(x) < w else abs(x) - c


@pytest.mark.parametrize("x", [0.0, 0.5, -1.0, 3.0, 9.99, 10.0, -25.0])
def test_wing_matches_formula(x: float) -> None:
    assert wing(torch.tensor(x, dtype=torch.float64)).item() == pytest.approx(
        _wing_formula(x), rel=1e-9
    )


def test_wing_is_continuous_at_w() -> None:
    below, above = wing(torch.tensor([10 - 1e-6, 10 + 1e-6], dtype=torch.float64))
    assert below.item() == pytest.approx(above.item(), abs=1e-5)


def test_wing_scale_converts_normalised_units_to_pixels() -> None:
    w_px, h_px = 64, 48
    loss_fn = create_loss("wing", scale=pixel_scale((w_px, h_px)))
    target = torch.zeros(1, 1, 2)
    pred = torch.tensor([[[6 / (w_px / 2), 15 / (h_px / 2)]]])  # 6 px right, 15 px down
    expected = (_wing_formula(6.0) + _wing_formula(15.0)) / 2
    assert loss_fn(pred, target).item() == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------- heatmaps
def test_adaptive_wing_formula_values() -> None:
    y = torch.tensor([0.0, 1.0, 0.3], dtype=torch.float64)
    assert torch.allclose(adaptive_wing(y, y), torch.zeros(3, dtype=torch.float64))
    # inside theta: omega * ln(1 + |d/eps|^(alpha - y))
    got = adaptive_wing(
        torch.tensor([0.2], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    )
    assert got.item() == pytest.approx(14 * math.log(1 + 0.2**2.1), rel=1e-9)
    # the two branches meet at theta
    for target in (0.0, 0.5, 1.0):
        t = torch.tensor([target, target], dtype=torch.float64)
        d = torch.tensor([AWING_THETA - 1e-7, AWING_THETA + 1e-7], dtype=torch.float64)
        below, above = adaptive_wing(t + d, t)
        assert below.item() == pytest.approx(above.item(), abs=1e-5)


@pytest.mark.parametrize("name", ["heatmap_mse", "adaptive_wing", "integral"])
def test_heatmap_losses_prefer_maps_drawn_at_the_target(name: str) -> None:
    sigma = 1.5
    loss_fn = create_loss(name, sigma=sigma)
    cells = torch.tensor([[[4.2, 3.5], [10.0, 7.7]]])
    target = cells_to_normalized(cells, HM)
    good = render_gaussian_heatmaps(target, HM, sigma).clamp(1e-6, 1 - 1e-6)
    bad = render_gaussian_heatmaps(cells_to_normalized(cells + 3, HM), HM, sigma).clamp(
        1e-6, 1 - 1e-6
    )
    # logits whose sigmoid (heatmap_mse, adaptive_wing) or softmax (integral) is the Gaussian
    to_logits = (lambda p: p.log()) if name == "integral" else torch.logit
    good_loss = loss_fn(target, target, heatmaps=to_logits(good))
    bad_loss = loss_fn(target, target, heatmaps=to_logits(bad))
    assert good_loss.item() < 1e-3 < bad_loss.item()


def test_heatmap_loss_weights() -> None:
    pred, target = _coords()
    heatmaps = torch.randn(B, K, HM[1], HM[0])
    l1 = create_loss("l1")(pred, target)
    # heatmap_weight=0: the plain coordinate loss, no heatmaps needed
    for name in ("integral", "adaptive_wing", "heatmap_mse"):
        plain = create_loss(name, heatmap_weight=0)
        assert not plain.needs_heatmaps
        assert torch.allclose(plain(pred, target), l1)
    # coord_weight=0: the heatmap term alone, independent of pred
    pure = create_loss("adaptive_wing", coord_weight=0)
    assert torch.allclose(
        pure(pred, target, heatmaps=heatmaps), pure(target, target, heatmaps=heatmaps)
    )
    with pytest.raises(ConfigError, match="both 0"):
        create_loss("heatmap_mse", coord_weight=0, heatmap_weight=0)


def test_heatmap_losses_pass_scale_to_their_coordinate_loss() -> None:
    with pytest.raises(ConfigError, match="pixel_scale"):
        create_loss("integral", coord="wing")
    with pytest.raises(ConfigError, match="not a coordinate loss"):
        create_loss("integral", coord="adaptive_wing")
    pred, target = _coords()
    scale = pixel_scale((64, 48))
    wing_only = create_loss("wing", scale=scale)(pred, target)
    assert torch.allclose(
        create_loss("integral", coord="wing", scale=scale, heatmap_weight=0)(pred, target),
        wing_only,
    )
