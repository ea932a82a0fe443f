"""Training losses for keypoint models, behind a registry: ``create_loss(name, **kw)``.

Calling convention (what the trainer does)::

    loss = create_loss(name, scale=pixel_scale((W, H)), ...)
    if loss.needs_heatmaps:          # the model must have forward_heatmaps
        coords, heatmaps = model.forward_heatmaps(x)
        value = loss(coords, target, mask, heatmaps=heatmaps)
    else:
        value = loss(model(x), target, mask)

* ``pred`` and ``target`` are ``(B, K, 2)`` **normalised** coordinates
  (``docs/FORMATS.md``); ``mask`` is an optional ``(B, K)`` weight (1 = use
  the point, 0 = ignore it, e.g. an occluded or cropped-out point);
  ``heatmaps`` are the ``(B, K, h, w)`` logits from ``forward_heatmaps``.
* Each loss returns a scalar: the mean over the used points (and over x and y).
* ``scale`` converts normalised units to input pixels: one normalised unit is
  ``W / 2`` pixels horizontally and ``H / 2`` vertically, so pass
  ``scale=pixel_scale((W, H)) == (W / 2, H / 2)`` (a float is used for both
  axes). Every coordinate loss accepts it; it matters for ``wing``, whose
  ``w`` and ``eps`` are in pixels, and for ``smooth_l1``'s ``beta``. With the
  default ``scale=1`` the losses work in normalised units (``mse`` at scale 1
  is the assignment's ``nn.MSELoss`` on normalised coordinates).

Registered losses (see :func:`list_losses`):

``mse``, ``l1``, ``smooth_l1``, ``wing``
    Coordinate losses.
``heatmap_mse``, ``adaptive_wing``, ``integral``
    For heatmap models (they need ``heatmaps=``): ``coord_weight`` times a
    coordinate loss on the soft-argmax output (``coord=``, default ``l1``,
    with ``scale``) plus ``heatmap_weight`` times a heatmap term against
    Gaussians drawn at the targets (``sigma`` in heatmap cells):
    ``heatmap_mse`` and ``adaptive_wing`` (Wang et al. 2019) compare
    ``sigmoid(logits)`` with peak-1 Gaussians; ``integral`` is the
    Jensen-Shannon divergence between ``softmax(logits)`` and the normalised
    Gaussian (DSNT, Nibali et al. 2018). ``heatmap_weight=0`` leaves the plain
    coordinate loss (``needs_heatmaps`` is then False); ``coord_weight=0`` a
    pure heatmap loss, whose soft-argmax is biased towards the image centre
    until the maps' background is very negative, so keep the coordinate term.
    Pass ``scale=pixel_scale((W, H))`` here too: the coordinate term is then
    in pixels and of the same order as the heatmap terms (on a 4-image toy
    set, ``adaptive_wing`` reached 0.14 px with it, 4.4 px with ``coord_weight=0``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kpcore.errors import ConfigError
from kpcore.models.heatmap import render_gaussian_heatmaps

#: Wing loss defaults (Feng et al., CVPR 2018), in pixels.
WING_W = 10.0
WING_EPS = 2.0
#: Adaptive wing defaults (Wang et al., ICCV 2019), in heatmap intensity units.
AWING_OMEGA = 14.0
AWING_THETA = 0.5
AWING_EPS = 1.0
AWING_ALPHA = 2.1
#: Default Gaussian width of heatmap targets, in heatmap cells.
DEFAULT_SIGMA = 1.5
#: Floor inside logarithms of probabilities.
_LOG_FLOOR = 1e-12

Scale = float | Sequence[float]


def pixel_scale(input_size: tuple[int, int]) -> tuple[float, float]:
    """Pixels per normalised unit for an input of ``(width, height)``: ``(W / 2, H / 2)``."""
    w, h = input_size
    return (w / 2.0, h / 2.0)


def _check_shapes(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> None:
    if pred.shape != target.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f"pred and target must both be (B, K, 2); got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    if mask is not None and tuple(mask.shape) != tuple(pred.shape[:2]):
        raise ValueError(f"mask must be (B, K) = {tuple(pred.shape[:2])}; got {tuple(mask.shape)}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (``(B, K, ...)``) over the points where ``mask`` (``(B, K)``) is set.

    ``mask`` may hold weights; the result is ``sum(w * v) / sum(w * n)`` with
    ``n`` the number of values per point. An all-zero mask gives 0 (not NaN).
    """
    if mask is None:
        return values.mean()
    per_point = values.reshape(values.shape[0], values.shape[1], -1)
    w = mask.to(values.dtype).unsqueeze(-1)
    denom = (w.sum() * per_point.shape[-1]).clamp_min(1.0)
    return (per_point * w).sum() / denom


class KeypointLoss(nn.Module):
    """Base class of kpcore losses.

    Attributes:
        name: Registry name.
        needs_heatmaps: ``True`` when ``forward`` needs the ``heatmaps=`` logits
            (the model must then have ``forward_heatmaps``).
    """

    name: str = ""
    needs_heatmaps: bool = False

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        heatmaps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def _require_heatmaps(self, heatmaps: torch.Tensor | None, k: int) -> torch.Tensor:
        if heatmaps is None:
            raise ConfigError(
                f"loss {self.name!r} needs heatmaps: call it as loss(coords, target, mask, heatmaps=logits) "
                f"with (coords, logits) = model.forward_heatmaps(x), using a heatmap model "
                f"(kind 'heatmap' in kpcore.models.model_info)"
            )
        if heatmaps.ndim != 4 or heatmaps.shape[1] != k:
            raise ValueError(f"heatmaps must be (B, K={k}, h, w); got {tuple(heatmaps.shape)}")
        return heatmaps


class CoordinateLoss(KeypointLoss):
    """Element-wise loss of the coordinate error ``d = (pred - target) * scale``.

    Args:
        fn: Element-wise function of ``d``.
        scale: Pixels per normalised unit, a float or ``(sx, sy)``; see the module doc.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], scale: Scale = 1.0) -> None:
        super().__init__()
        s = (
            (float(scale), float(scale))
            if isinstance(scale, int | float)
            else tuple(float(v) for v in scale)
        )
        if len(s) != 2 or min(s) <= 0:
            raise ConfigError(
                f"scale must be a positive float or (sx, sy), e.g. pixel_scale((W, H)); got {scale!r}"
            )
        self.fn = fn
        self.register_buffer("scale", torch.tensor(s), persistent=False)

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        heatmaps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean element-wise loss over the used points and both axes; ``heatmaps`` is ignored."""
        _check_shapes(pred, target, mask)
        d = (pred - target) * self.scale.to(pred.dtype)
        return masked_mean(self.fn(d), mask)


def wing(d: torch.Tensor, w: float = WING_W, eps: float = WING_EPS) -> torch.Tensor:
    """Wing loss of an error ``d`` (Feng et al., "Wing Loss for Robust Facial Landmark
    Localisation with CNNs", CVPR 2018), element-wise::

        wing(d) = w * ln(1 + |d| / eps)     if |d| < w
                  |d| - C                   otherwise,   C = w - w * ln(1 + w / eps)

    ``w`` and ``eps`` are in the units of ``d`` (pixels in the paper).
    """
    a = d.abs()
    c = w - w * math.log1p(w / eps)
    return torch.where(a < w, w * torch.log1p(a / eps), a - c)


def adaptive_wing(
    pred: torch.Tensor,
    target: torch.Tensor,
    omega: float = AWING_OMEGA,
    theta: float = AWING_THETA,
    eps: float = AWING_EPS,
    alpha: float = AWING_ALPHA,
) -> torch.Tensor:
    """Adaptive wing loss (Wang et al., ICCV 2019), element-wise, for heatmaps in ``[0, 1]``::

        AWing = omega * ln(1 + |d / eps| ** (alpha - y))   if |d| < theta
                A * |d| - C                                 otherwise

    with ``d = y - pred``, ``y`` the target intensity,
    ``A = omega / (1 + (theta/eps)**(alpha-y)) * (alpha-y) * (theta/eps)**(alpha-y-1) / eps`` and
    ``C = theta * A - omega * ln(1 + (theta/eps)**(alpha-y))``.
    """
    d = (target - pred).abs()
    p = alpha - target
    r = theta / eps
    a = omega / (1 + r**p) * p * r ** (p - 1) / eps
    c = theta * a - omega * torch.log1p(r**p)
    return torch.where(d < theta, omega * torch.log1p((d / eps) ** p), a * d - c)


HEATMAP_TERMS: tuple[str, ...] = ("mse", "adaptive_wing", "js")


class HeatmapLoss(KeypointLoss):
    """``coord_weight * coord(pred, target) + heatmap_weight * term(heatmaps, Gaussian targets)``.

    The heatmap term compares the ``(B, K, h, w)`` logits with Gaussians
    (``sigma`` in heatmap cells) rendered at the target points:

    * ``"mse"``: squared error between ``sigmoid(logits)`` and peak-1 Gaussians;
    * ``"adaptive_wing"``: :func:`adaptive_wing` between the same two;
    * ``"js"``: Jensen-Shannon divergence between ``softmax(logits)`` over the
      map and the Gaussian normalised to sum 1 (DSNT regulariser).

    The coordinate term supervises the soft-argmax output directly. Keep it on
    with the sigmoid terms: a soft-argmax over sigmoid-trained maps is pulled
    towards the centre by the background until its logits are very negative.

    Args:
        term: One of :data:`HEATMAP_TERMS`.
        coord: Coordinate loss, or ``None`` for a heatmap-only loss.
        coord_weight: Weight of the coordinate loss.
        heatmap_weight: Weight of the heatmap term; 0 turns it off (then no heatmaps needed).
        sigma: Gaussian standard deviation in heatmap cells.
        **awing: ``omega``, ``theta``, ``eps``, ``alpha`` for ``adaptive_wing``.
    """

    def __init__(
        self,
        term: str,
        coord: CoordinateLoss | None,
        coord_weight: float = 1.0,
        heatmap_weight: float = 1.0,
        sigma: float = DEFAULT_SIGMA,
        **awing: float,
    ) -> None:
        super().__init__()
        if term not in HEATMAP_TERMS:
            raise ConfigError(f"heatmap term {term!r} is not one of {HEATMAP_TERMS}")
        if coord_weight < 0 or heatmap_weight < 0:
            raise ConfigError(
                f"coord_weight and heatmap_weight must be >= 0, got {coord_weight}, {heatmap_weight}"
            )
        if coord is None or coord_weight == 0:
            coord, coord_weight = None, 0.0
        if coord is None and heatmap_weight == 0:
            raise ConfigError(
                "coord_weight and heatmap_weight are both 0: the loss would be constant"
            )
        if sigma <= 0:
            raise ConfigError(f"sigma must be > 0 heatmap cells, got {sigma}")
        self.term = term
        self.coord = coord
        self.coord_weight = float(coord_weight)
        self.heatmap_weight = float(heatmap_weight)
        self.sigma = float(sigma)
        self.awing = awing
        self.needs_heatmaps = self.heatmap_weight > 0

    def heatmap_term(
        self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The heatmap term alone (mean over the used points' maps)."""
        b, k, h, w = logits.shape
        goal = render_gaussian_heatmaps(target.detach(), (w, h), self.sigma)
        if self.term == "js":
            p = torch.softmax(logits.float().reshape(b, k, h * w), dim=-1)
            q = goal.reshape(b, k, h * w)
            q = q / q.sum(dim=-1, keepdim=True).clamp_min(_LOG_FLOOR)
            log_m = (0.5 * (p + q)).clamp_min(_LOG_FLOOR).log()
            kl_p = F.kl_div(log_m, p, reduction="none").sum(-1)
            kl_q = F.kl_div(log_m, q, reduction="none").sum(-1)
            return masked_mean(0.5 * (kl_p + kl_q), mask)
        prob = torch.sigmoid(logits.float())
        if self.term == "mse":
            return masked_mean((prob - goal) ** 2, mask)
        return masked_mean(adaptive_wing(prob, goal, **self.awing), mask)

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: torch.Tensor | None = None,
        heatmaps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted sum of the coordinate loss on ``pred`` and the heatmap term on ``heatmaps``."""
        _check_shapes(pred, target, mask)
        value = pred.new_zeros(())
        if self.coord is not None:
            value = value + self.coord_weight * self.coord(pred, target, mask)
        if self.needs_heatmaps:
            logits = self._require_heatmaps(heatmaps, target.shape[1])
            value = value + self.heatmap_weight * self.heatmap_term(logits, target, mask)
        return value


# --------------------------------------------------------------------- registry
def _mse(*, scale: Scale = 1.0) -> KeypointLoss:
    return CoordinateLoss(lambda d: d * d, scale)


def _l1(*, scale: Scale = 1.0) -> KeypointLoss:
    return CoordinateLoss(torch.abs, scale)


def _smooth_l1(*, scale: Scale = 1.0, beta: float = 0.01) -> KeypointLoss:
    if beta <= 0:
        raise ConfigError(f"smooth_l1 beta must be > 0 (in the units given by scale), got {beta}")
    return CoordinateLoss(
        lambda d: F.smooth_l1_loss(d, torch.zeros_like(d), reduction="none", beta=beta), scale
    )


def _wing(*, scale: Scale | None = None, w: float = WING_W, eps: float = WING_EPS) -> KeypointLoss:
    if scale is None:
        raise ConfigError(
            "wing loss is defined in pixels (w=10, eps=2): pass scale=pixel_scale((W, H)) = (W/2, H/2) "
            "for a W x H input, e.g. create_loss('wing', scale=(112, 112)) at 224x224"
        )
    if w <= 0 or eps <= 0:
        raise ConfigError(f"wing needs w > 0 and eps > 0, got w={w}, eps={eps}")
    return CoordinateLoss(lambda d: wing(d, w, eps), scale)


def _coordinate_loss(owner: str, coord: str, scale: Scale | None, **kwargs: Any) -> CoordinateLoss:
    if coord not in _COORDINATE_LOSSES:
        raise ConfigError(
            f"{owner}: coord {coord!r} is not a coordinate loss; known: {sorted(_COORDINATE_LOSSES)}"
        )
    if scale is not None:  # else the coordinate loss's own default (wing insists on one)
        kwargs["scale"] = scale
    loss = create_loss(coord, **kwargs)
    if not isinstance(loss, CoordinateLoss):  # pragma: no cover - guarded by the name check
        raise ConfigError(f"{owner}: {coord!r} did not build a coordinate loss")
    return loss


def _heatmap_mse(
    *,
    scale: Scale | None = None,
    sigma: float = DEFAULT_SIGMA,
    coord: str = "l1",
    coord_weight: float = 1.0,
    heatmap_weight: float = 1.0,
) -> KeypointLoss:
    return HeatmapLoss(
        "mse", _coordinate_loss("heatmap_mse", coord, scale), coord_weight, heatmap_weight, sigma
    )


def _adaptive_wing(
    *,
    scale: Scale | None = None,
    sigma: float = DEFAULT_SIGMA,
    coord: str = "l1",
    coord_weight: float = 1.0,
    heatmap_weight: float = 1.0,
    omega: float = AWING_OMEGA,
    theta: float = AWING_THETA,
    eps: float = AWING_EPS,
    alpha: float = AWING_ALPHA,
) -> KeypointLoss:
    coord_loss = _coordinate_loss("adaptive_wing", coord, scale)
    return HeatmapLoss(
        "adaptive_wing", coord_loss, coord_weight, heatmap_weight, sigma,
        omega=omega, theta=theta, eps=eps, alpha=alpha,
    )  # fmt: skip


def _integral(
    *,
    scale: Scale | None = None,
    coord: str = "l1",
    heatmap_weight: float = 1.0,
    sigma: float = DEFAULT_SIGMA,
    **coord_kwargs: Any,
) -> KeypointLoss:
    coord_loss = _coordinate_loss("integral", coord, scale, **coord_kwargs)
    return HeatmapLoss("js", coord_loss, 1.0, heatmap_weight, sigma)


_COORDINATE_LOSSES = {"mse": _mse, "l1": _l1, "smooth_l1": _smooth_l1, "wing": _wing}
_LOSSES: dict[str, Callable[..., KeypointLoss]] = {
    **_COORDINATE_LOSSES,
    "heatmap_mse": _heatmap_mse,
    "adaptive_wing": _adaptive_wing,
    "integral": _integral,
}


def list_losses() -> list[str]:
    """Names accepted by :func:`create_loss`, sorted."""
    return sorted(_LOSSES)


def create_loss(name: str, **kwargs: Any) -> KeypointLoss:
    """Build a registered loss (see the module docstring for the names and options).

    Raises:
        ConfigError: unknown name (the message lists the known ones) or a bad option.
    """
    try:
        factory = _LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; known: {list_losses()}") from None
    params = inspect.signature(factory).parameters.values()
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = [p.name for p in params]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ConfigError(f"loss {name!r} does not take {unknown}; it accepts {accepted}")
    loss = factory(**kwargs)
    loss.name = name
    return loss
