"""The coordinate convention and the crop matrix, written down once and tested."""

import numpy as np
import pytest

from kpcore.data import geometry as geo


def test_crop_matrix_maps_box_edges_to_input_edges():
    # box covering pixel columns 10..29 (edges 10 and 30) -> 10 input pixels
    m = geo.crop_matrix((10, 20, 20, 40), (10, 20))
    # the centre of the first pixel of the box's 2x2 block lands on input pixel 0's centre
    np.testing.assert_allclose(geo.apply(m, [[10.5, 20.5]]), [[0.0, 0.0]])
    # edges map to edges: x = 9.5 (left edge, centre coords) -> -0.5
    np.testing.assert_allclose(geo.apply(m, [[9.5, 19.5]]), [[-0.5, -0.5]])
    np.testing.assert_allclose(geo.apply(m, [[29.5, 59.5]]), [[9.5, 19.5]])


@pytest.mark.parametrize("box", [(3.2, -7.5, 55.1, 61.7), (0, 0, 640, 480), (100, 50, 10, 300)])
def test_crop_uncrop_round_trips_exactly(box):
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 700, size=(68, 2))
    m = geo.crop_matrix(box, (128, 96))
    back = geo.apply(geo.invert(m), geo.apply(m, pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_warp_puts_a_bright_pixel_under_its_mapped_point():
    img = np.zeros((200, 300), np.uint8)
    x, y = 171, 83
    img[y, x] = 255
    m = geo.crop_matrix((120, 40, 100, 100), (100, 100))  # identity scale, shifted
    out = geo.warp(img, m, (100, 100))
    yy, xx = np.unravel_index(out.argmax(), out.shape)
    np.testing.assert_allclose(geo.apply(m, [[x, y]])[0], [xx, yy], atol=1e-6)


def test_warp_downscale_keeps_blob_under_point():
    img = np.zeros((480, 640), np.float32)
    yy, xx = np.mgrid[0:480, 0:640]
    cx, cy = 401.3, 222.8
    img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 6.0**2))
    m = geo.crop_matrix((0, 0, 640, 480), (80, 60))  # 8x down, like the nose task
    out = geo.warp(img, m, (80, 60))
    oy, ox = np.mgrid[0:60, 0:80]
    centroid = np.array([(out * ox).sum(), (out * oy).sum()]) / out.sum()
    np.testing.assert_allclose(geo.apply(m, [[cx, cy]])[0], centroid, atol=0.1)


def test_normalize_round_trip_and_corners():
    size = (128, 96)
    pts = np.array([[-0.5, -0.5], [127.5, 95.5], [63.5, 47.5]])
    u = geo.normalize_points(pts, size)
    np.testing.assert_allclose(u, [[-1, -1], [1, 1], [0, 0]])
    np.testing.assert_allclose(geo.denormalize_points(u, size), pts)


def test_enlarge_box_keeps_centre_and_aspect():
    b = geo.enlarge_box((10, 20, 100, 50), 1.5, aspect=4 / 3)
    assert b[2] / b[3] == pytest.approx(4 / 3)
    assert (b[0] + b[2] / 2, b[1] + b[3] / 2) == pytest.approx((60, 45))
    assert b[2] == pytest.approx(150)  # width 100 already wider than 4:3 of 50 -> height grows


@pytest.mark.parametrize("bad", [(0, 0, 0, 10), (0, 0, 10, -1), (0, 0, 10), (0, 0, float("nan"), 3)])
def test_bad_boxes_are_rejected_with_the_value(bad):
    with pytest.raises(ValueError, match="box"):
        geo.as_box(bad)
