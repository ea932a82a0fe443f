"""The coordinate convention and the crop matrix, written down once and tested."""

import cv2
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


@pytest.mark.parametrize("box", [(150.3, 90.7, 330.0, 330.0), (-40.0, -25.0, 300.0, 260.0), (420.0, 300.0, 260.0, 240.0)])
def test_warp_downscale_of_a_part_keeps_blob_under_point(box):
    # a ~2.6x-4.5x shrink of part of the image (inside, over the top-left corner, over the
    # bottom-right corner): the area pre-shrink covers only that part, its matrix must still be exact
    img = np.zeros((480, 640), np.float32)
    yy, xx = np.mgrid[0:480, 0:640]
    cx, cy = box[0] + 0.61 * box[2], box[1] + 0.47 * box[3]
    img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 8.0**2))
    m = geo.crop_matrix(box, (96, 72))
    out = geo.warp(img, m, (96, 72))
    oy, ox = np.mgrid[0:72, 0:96]
    centroid = np.array([(out * ox).sum(), (out * oy).sum()]) / out.sum()
    np.testing.assert_allclose(geo.apply(m, [[cx, cy]])[0], centroid, atol=0.1)


def test_warp_downscale_matches_a_whole_image_area_resize():
    # the fast path (area over k x k blocks of the part it needs) against shrinking the whole image by
    # the same k with OpenCV and warping that: the same picture up to the blocks' phase
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (600, 800, 3)).astype(np.float32), (0, 0), 6)
    box = (203.0, 117.0, 390.0, 390.0)  # 3.05x down: k = 2 blocks, then a 0.66 warp
    m = geo.crop_matrix(box, (128, 128))
    small = cv2.resize(img, (400, 300), interpolation=cv2.INTER_AREA)
    ref = cv2.warpAffine(small, (m @ geo.invert(geo.crop_matrix((0, 0, 800, 600), (400, 300))))[:2], (128, 128))
    out = geo.warp(img, m, (128, 128))
    assert out.shape == (128, 128, 3)
    assert np.abs(out - ref).mean() < 0.5


def test_warp_outside_the_image_is_border_and_edges_stay_put():
    img = np.full((300, 400, 3), 200, np.uint8)
    far = geo.warp(img, geo.crop_matrix((1000, 1000, 300, 300), (64, 64)), (64, 64))
    assert far.shape == (64, 64, 3) and far.max() == 0
    # a crop half over the right edge (4x down): the image's half is content, the rest border
    out = geo.warp(img, geo.crop_matrix((250, 0, 300, 300), (64, 64)), (64, 64))
    assert out[:, :30].min() == 200 and out[:, 34:].max() == 0
