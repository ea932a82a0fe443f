"""Properties of keypoint-aware augmentation: one geometric truth for image and points."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from kpcore.data.datasets import Sample
from kpcore.data.facts import FACTS, IMM_FACTS, W300_FACTS, DatasetFacts
from kpcore.data.loader import InputSpec, KeypointDataset
from kpcore.data.transforms import AugmentConfig, FaceHorizontalFlip, flip_points

H, W = 96, 128


def blob_image(points, h=H, w=W, sigma=1.5):
    """float image (1, h, w) with a Gaussian blob at each point (x, y)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w), np.float32)
    for x, y in points:
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return torch.from_numpy(img)[None]


def centroid(img, near, radius=5):
    """Intensity centroid of (1, h, w) image in a window around ``near``."""
    a = img[0].numpy().astype(np.float64)
    x0, y0 = int(round(near[0])), int(round(near[1]))
    h, w = a.shape
    ys = slice(max(y0 - radius, 0), min(y0 + radius + 1, h))
    xs = slice(max(x0 - radius, 0), min(x0 + radius + 1, w))
    win = a[ys, xs]
    yy, xx = np.mgrid[ys, xs]
    return np.array([(win * xx).sum(), (win * yy).sum()]) / win.sum()


@pytest.mark.parametrize("name, fn", [
    ("rotate", lambda t: [F.rotate(x, 13.0) for x in t]),
    ("affine", lambda t: [F.affine(x, angle=-11.0, translate=[5.0, -3.0], scale=1.08, shear=[0.0, 0.0])
                          for x in t]),
    ("crop", lambda t: [F.crop(x, 10, 20, 60, 80) for x in t]),
    ("resize", lambda t: [F.resize(x, [48, 64]) for x in t]),
    ("resize_up", lambda t: [F.resize(x, [150, 200]) for x in t]),
    ("random_affine", lambda t: v2.RandomAffine(15, (0.05, 0.05), (0.9, 1.1))(t)),
])
def test_bright_pixel_stays_under_transformed_keypoint(name, fn):
    pts = np.array([[40.3, 30.7], [70.0, 55.2], [90.6, 40.1]])
    torch.manual_seed(0)
    img = tv_tensors.Image(blob_image(pts))
    kps = tv_tensors.KeyPoints(torch.tensor(pts, dtype=torch.float32), canvas_size=(H, W))
    out_img, out_kps = fn((img, kps))
    errors = [np.linalg.norm(centroid(out_img, p) - p) for p in out_kps.numpy()]
    assert max(errors) <= 1.0, (name, errors)


def test_face_flip_twice_is_identity():
    pts = torch.rand(68, 2) * torch.tensor([W - 1, H - 1])
    img = tv_tensors.Image(torch.rand(1, H, W))
    kps = tv_tensors.KeyPoints(pts, canvas_size=(H, W))
    flip = FaceHorizontalFlip(W300_FACTS.flip_permutation, p=1.0)
    img2, kps2 = flip(*flip(img, kps))
    torch.testing.assert_close(img2, img)
    torch.testing.assert_close(kps2.as_subclass(torch.Tensor), pts)


@pytest.mark.parametrize("facts", [W300_FACTS, IMM_FACTS])
def test_flip_sends_left_outer_eye_corner_to_where_right_was(facts):
    right, left = (36, 45) if facts is W300_FACTS else (21, 13)  # subject's right / left outer corner
    rng = np.random.default_rng(1)
    pts = rng.uniform([0, 0], [W - 1, H - 1], size=(facts.num_points, 2))
    img = tv_tensors.Image(blob_image(pts[[left]]))
    kps = tv_tensors.KeyPoints(torch.tensor(pts, dtype=torch.float32), canvas_size=(H, W))
    img2, kps2 = FaceHorizontalFlip(facts.flip_permutation, p=1.0)(img, kps)
    kps2 = kps2.numpy()
    # the point now labelled "right outer corner" is the mirror image of the old left one
    np.testing.assert_allclose(kps2[right], [W - 1 - pts[left, 0], pts[left, 1]], atol=1e-4)
    # and the image pixel moved there too
    assert np.linalg.norm(centroid(img2, kps2[right]) - kps2[right]) < 0.05
    np.testing.assert_allclose(flip_points(pts, W, facts), kps2, atol=1e-4)


@pytest.mark.parametrize("facts", list(FACTS.values()))
def test_flip_pairs_are_mirror_symmetric_on_real_geometry(facts: DatasetFacts):
    # every flip permutation is an involution
    perm = facts.flip_permutation
    np.testing.assert_array_equal(perm[perm], np.arange(facts.num_points))


def test_augmented_dataset_keeps_points_on_their_pixels(tmp_path):
    """End to end: box crop + jitter + v2 affine + flip, checked against the pixels."""
    h, w = 240, 320
    facts = W300_FACTS
    rng = np.random.default_rng(2)
    pts = np.stack([rng.uniform(110, 210, 68), rng.uniform(70, 170, 68)], axis=1)
    sparse = [36, 45, 30, 48, 54, 8]  # a few points, placed well apart and inside the crop, carry blobs
    pts[sparse] = [[130, 95], [190, 95], [160, 125], [135, 150], [185, 150], [160, 175]]
    img = (blob_image(pts[sparse], h, w, sigma=2.0)[0].numpy() * 255).clip(0, 255).astype(np.uint8)
    Image.fromarray(np.stack([img] * 3, axis=-1)).save(tmp_path / "face.png")
    sample = Sample("face.png", tmp_path / "face.png", pts.astype(np.float32), (100, 60, 120, 120), 50.0, (w, h))
    aug = AugmentConfig(brightness=0, contrast=0, saturation=0, hue=0, flip=0.5)
    ds = KeypointDataset([sample], facts, InputSpec(96, 96, enlarge=1.3), aug, progress=False)
    torch.manual_seed(0)
    for _ in range(12):
        item = ds[0]
        image = item["image"] * 0.25 + 0.5
        for i in sparse:
            p = item["points"][i].numpy()
            c = centroid(image, p, radius=3)
            assert np.linalg.norm(c - p) <= 1.0


def test_plain_dataset_maps_back_exactly():
    facts = W300_FACTS
    pts = np.random.default_rng(3).uniform(50, 150, (68, 2)).astype(np.float32)
    s = Sample("x", "unused.png", pts, (40, 40, 120, 120), 10.0, (200, 200))
    ds = KeypointDataset([s], facts, InputSpec(64, 64), None, cache=False, progress=False)
    m = ds.crop_matrix(0)
    from kpcore.data import geometry as geo

    back = geo.apply(geo.invert(m), geo.denormalize_points(geo.normalize_points(geo.apply(m, pts), (64, 64)),
                                                             (64, 64)))
    np.testing.assert_allclose(back, pts, atol=1e-4)


def test_augment_config_validation_names_the_field():
    from kpcore.errors import ConfigError

    with pytest.raises(ConfigError, match="augment.flip"):
        AugmentConfig(flip=1.5).validate()
    with pytest.raises(ConfigError, match="augment.hue"):
        AugmentConfig(hue=0.9).validate()


def test_sensor_noise_moves_pixels_not_points():
    """augment.noise: Gaussian noise of up to noise_sigma on some samples; the points do not move."""
    from kpcore.data.transforms import apply_augmentation, build_augmentation
    from kpcore.errors import ConfigError

    still = {"rotate_deg": 0, "shift": 0, "scale_min": 1, "scale_max": 1, "box_jitter": 0, "brightness": 0,
             "contrast": 0, "saturation": 0, "hue": 0, "flip": 0}
    image = np.full((48, 48, 3), 128, np.uint8)
    points = np.random.default_rng(0).uniform(0, 47, (68, 2))
    torch.manual_seed(0)
    pipe = build_augmentation(AugmentConfig(**still, noise=1.0, noise_sigma=0.2), W300_FACTS, True)
    stds = []
    for _ in range(30):
        out, moved = apply_augmentation(pipe, image, points)
        assert out.dtype == torch.uint8 and out.shape == (3, 48, 48)
        np.testing.assert_allclose(moved, points, atol=1e-4)
        stds.append(out.float().std().item() / 255)
    # each sample's sigma is a quarter, a half or all of 0.2 (51 grey levels)
    assert min(stds) > 0.04 and max(stds) < 0.22 and max(stds) > 0.17
    never = build_augmentation(AugmentConfig(**still, noise=0.0), W300_FACTS, True)
    assert never is None  # nothing left to do
    with pytest.raises(ConfigError, match="augment.noise_sigma"):
        AugmentConfig(noise=0.5, noise_sigma=3).validate()
