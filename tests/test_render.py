"""Tests of kpcore.live.render: points land on the right pixels, in the right colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kpcore.data.facts import IMM_FACTS, W300_FACTS
from kpcore.live.render import (
    BOX_COLOR,
    PRED_COLOR,
    TRUE_COLOR,
    augmentation_grid,
    draw_boxes,
    draw_keypoints,
    image_grid,
    maps_grid,
    points_canvas,
    to_rgb_uint8,
)

GRAY = 100


def _blank(h: int = 60, w: int = 80) -> np.ndarray:
    return np.full((h, w, 3), GRAY, dtype=np.uint8)


@pytest.mark.parametrize("xy", [(10.0, 20.0), (33.4, 7.6), (0.0, 0.0), (79.0, 59.0), (52.5001, 41.49)])
def test_predicted_point_is_red_at_its_pixel(xy: tuple[float, float]) -> None:
    x, y = xy
    out = draw_keypoints(_blank(), np.array([[x, y]]))
    assert tuple(out[round(y), round(x)]) == PRED_COLOR


def test_true_point_is_green_and_prediction_is_drawn_on_top() -> None:
    pred = np.array([[10.0, 10.0], [40.0, 30.0]])
    true = np.array([[20.0, 40.0], [40.0, 30.0]])
    out = draw_keypoints(_blank(), pred, true_points=true)
    assert tuple(out[40, 20]) == TRUE_COLOR
    assert tuple(out[10, 10]) == PRED_COLOR
    assert tuple(out[30, 40]) == PRED_COLOR  # same place: the prediction wins


def test_input_is_not_changed_and_shape_kept() -> None:
    img = _blank()
    before = img.copy()
    out = draw_keypoints(img, np.array([[5.0, 5.0]]))
    assert np.array_equal(img, before)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert tuple(out[50, 70]) == (GRAY, GRAY, GRAY)  # far from the point: untouched


def test_gray_float_and_pil_inputs() -> None:
    gray = np.full((30, 40), 0.5, dtype=np.float32)
    assert draw_keypoints(gray, [[3, 4]]).shape == (30, 40, 3)
    pil = Image.new("L", (40, 30), 128)
    out = draw_keypoints(pil, [[12, 7]])
    assert tuple(out[7, 12]) == PRED_COLOR
    assert tuple(to_rgb_uint8(gray)[0, 0]) == (128, 128, 128)


def test_nan_points_are_skipped_and_bad_shapes_rejected() -> None:
    out = draw_keypoints(_blank(), np.array([[np.nan, np.nan], [30.0, 30.0]]))
    assert tuple(out[30, 30]) == PRED_COLOR
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        draw_keypoints(_blank(), np.zeros((3, 3)))


def test_skeleton_joins_points_along_layout_edges() -> None:
    img = np.zeros((200, 200, 3), dtype=np.uint8)
    pts = np.full((W300_FACTS.num_points, 2), np.nan)
    a, b = W300_FACTS.edges[0]
    pts[a] = (20, 100)
    pts[b] = (180, 100)
    with_edges = draw_keypoints(img, pts, W300_FACTS)
    without = draw_keypoints(img, pts, W300_FACTS, skeleton=False)
    assert with_edges[100, 100].sum() > 0  # the midpoint of the edge is coloured
    assert without[100, 100].sum() == 0


def test_error_lines_join_prediction_and_truth() -> None:
    img = np.zeros((100, 100, 3), dtype=np.uint8)
    out = draw_keypoints(img, [[10, 50]], true_points=[[90, 50]], error_lines=True)
    assert out[50, 50].sum() > 0
    plain = draw_keypoints(img, [[10, 50]], true_points=[[90, 50]])
    assert plain[50, 50].sum() == 0


def test_sizes_scale_with_the_image() -> None:
    def red_area(side: int) -> int:
        out = draw_keypoints(np.zeros((side, side, 3), np.uint8), [[side / 2, side / 2]])
        return int((out[:, :, 0] > 128).sum())

    assert red_area(800) > 4 * red_area(200)


def test_image_grid_shape_and_placement() -> None:
    tiles = [np.full((10, 20, 3), v, np.uint8) for v in (10, 20, 30, 40, 50)]
    grid = image_grid(tiles, ncols=2, pad=1, pad_value=255)
    assert grid.shape == (3 * 11 + 1, 2 * 21 + 1, 3)
    assert tuple(grid[1, 1]) == (10, 10, 10)
    assert tuple(grid[1, 22]) == (20, 20, 20)
    assert tuple(grid[23, 1]) == (50, 50, 50)
    assert tuple(grid[23, 22]) == (255, 255, 255)  # empty cell


def test_image_grid_mixed_sizes_and_errors() -> None:
    grid = image_grid([np.zeros((5, 5), np.uint8), np.zeros((8, 3, 3), np.uint8)], ncols=4, pad=0)
    assert grid.shape == (8, 10, 3)
    with pytest.raises(ValueError):
        image_grid([], 2)
    with pytest.raises(ValueError):
        image_grid([np.zeros((2, 2))], 0)


def test_maps_grid_keeps_small_filters_blocky() -> None:
    maps = np.zeros((4, 3, 3))
    maps[:, 1, 1] = 1.0
    grid = maps_grid(maps, ncols=2, cell=30, symmetric=True, pad=0)
    assert grid.shape == (60, 60, 3)
    assert tuple(grid[15, 15]) == (255, 255, 255)  # centre weight: brightest
    assert tuple(grid[2, 2]) == (128, 128, 128)  # zero weight: mid gray


def test_draw_boxes_outlines_the_box() -> None:
    out = draw_boxes(np.zeros((50, 50, 3), np.uint8), [(10.5, 10.5, 20, 20)], line_width=1)
    assert tuple(out[10, 20]) == BOX_COLOR  # top edge: edge coordinate 10.5 is pixel row 10
    assert out[20, 20].sum() == 0  # inside stays untouched


def test_points_canvas_fits_points() -> None:
    canvas, (p, t) = points_canvas(np.array([[100.0, 100], [300, 500]]), None, size=200)
    assert canvas.shape == (200, 200, 3) and t is None
    assert p.min() >= 0 and p.max() <= 199


def test_augmentation_grid_calls_draw_fn_n_times() -> None:
    calls = []

    def draw() -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        return np.zeros((100, 50, 3), np.uint8), np.array([[25.0, 50.0]])

    grid = augmentation_grid(draw, 6, IMM_FACTS.subset([0], "one", "one"), ncols=3, tile=64)
    assert len(calls) == 6
    assert grid.shape == (2 * (64 + 2) + 2, 3 * (32 + 2) + 2, 3)
    # the point (25, 50) in a 50x100 image lands at (~15.7, 31.5) of each 32x64 tile, drawn green
    assert tuple(grid[2 + 32, 2 + 16]) == TRUE_COLOR
    assert tuple(grid[2 + 32, 2 + 34 + 16]) == TRUE_COLOR


# ------------------------------------------------------------ faces in photos
def _red_area(image: np.ndarray) -> int:
    return int(np.all(image == PRED_COLOR, axis=-1).sum())


def test_markers_scale_with_the_face_not_the_photo() -> None:
    from kpcore.live.render import FaceMark, draw_faces

    photo = np.full((1000, 2000, 3), GRAY, np.uint8)
    small = draw_faces(photo, [FaceMark(points=np.array([[300.0, 300.0]]), box=(250, 250, 90, 90))])
    large = draw_faces(photo, [FaceMark(points=np.array([[1300.0, 500.0]]), box=(1000, 200, 600, 600))])
    assert 0 < _red_area(small) < _red_area(large) / 10  # 1 px vs 6.7 px radius: ~45x the area
    # the same face in a photo 4x larger gets the same marker
    tiny_photo = np.full((250, 500, 3), GRAY, np.uint8)
    same = draw_faces(tiny_photo, [FaceMark(points=np.array([[100.0, 100.0]]), box=(55, 55, 90, 90))])
    assert abs(_red_area(same) - _red_area(small)) <= 2


def test_low_confidence_points_are_hollow_and_confident_ones_filled() -> None:
    from kpcore.live.render import LOW_COLOR, FaceMark, draw_faces

    points = np.array([[100.0, 100.0], [200.0, 100.0]])
    out = draw_faces(_blank(300, 300), [FaceMark(points=points, box=(50, 50, 200, 200),
                                                  point_confidence=np.array([0.9, 0.1]))])
    assert tuple(out[100, 100]) == PRED_COLOR
    assert tuple(out[100, 200]) == (GRAY, GRAY, GRAY)  # hollow: the photo shows in the middle
    ring = out[90:111, 190:211].reshape(-1, 3)
    assert any(tuple(p) == LOW_COLOR for p in ring)


def test_labels_stay_inside_the_image() -> None:
    from kpcore.live.render import FaceMark, draw_faces

    def label_pixels(image: np.ndarray) -> int:
        return int(np.all(np.abs(image.astype(int) - BOX_COLOR) <= 30, axis=-1).sum())

    label = "face 1 · 99% · conf 0.83"
    middle = draw_faces(_blank(400, 400), [FaceMark(points=None, box=(150, 150, 100, 100), label=label)])
    # at the top-right corner the label moves inside the box and left of the edge, not off the image
    corner = draw_faces(_blank(400, 400), [FaceMark(points=None, box=(330, 0, 70, 100), label=label)])
    assert label_pixels(corner) > 0.8 * label_pixels(middle)
    # a box at the top edge gets its label below it, clear of the top rows where viewers put buttons
    per_row = np.all(np.abs(corner.astype(int) - BOX_COLOR) <= 30, axis=-1).sum(axis=1)
    assert (per_row[3:97] <= 6).all()  # inside the box: only its two side lines
    label_alone = np.all(np.abs(middle.astype(int) - BOX_COLOR) <= 30, axis=-1)[:149].sum()  # above its box
    assert per_row[101:130].sum() > 0.8 * label_alone
    # a box filling the whole height: the label goes inside it, still in the image
    tall = draw_faces(_blank(400, 400), [FaceMark(points=None, box=(330, 0, 70, 400), label=label)])
    assert label_pixels(tall) > 0.8 * label_pixels(middle)


def test_pose_axes_are_drawn_from_the_origin() -> None:
    from kpcore.live.render import AXIS_COLORS, FaceMark, draw_faces

    mark = FaceMark(points=np.array([[100.0, 100.0]]), box=(50, 50, 100, 100),
                    pose={"yaw": 0.0, "pitch": 0.0, "roll": 0.0}, axes_origin=(100.0, 100.0))
    out = draw_faces(_blank(200, 200), [mark])
    assert tuple(out[100, 135]) == AXIS_COLORS[0]  # x axis: to the image's right
    assert tuple(out[135, 100]) == AXIS_COLORS[1]  # y axis: down


def test_face_crop_is_a_crisp_close_up_with_its_points() -> None:
    from kpcore.live.render import FaceMark, draw_faces, face_crop

    photo = _blank(600, 800)
    mark = FaceMark(points=np.array([[420.0, 320.0]]), box=(380, 280, 80, 80))
    crop = face_crop(photo, mark, size=256)
    assert crop.shape == (256, 256, 3)
    # the box centre (420, 320) is the crop centre; the marker is drawn at the crop's scale, not enlarged
    assert tuple(crop[128, 128]) == PRED_COLOR
    assert _red_area(crop) >= 3 * _red_area(draw_faces(photo, [mark]))


def test_a_label_wider_than_a_small_photo_is_shrunk_to_fit_whole() -> None:
    from kpcore.live.render import FaceMark, draw_faces

    label = "face 1 · 100% · conf 0.93"
    # a 112 px portrait whose face fills it: at the face's label size the text is wider than the photo
    out = draw_faces(_blank(112, 112), [FaceMark(points=None, box=(2, 20, 108, 90), label=label)])
    band = np.all(np.abs(out.astype(int) - BOX_COLOR) <= 30, axis=-1)
    # the label starts at the box's left edge, inside the photo; it was pushed left past the photo's
    # edge and cut there ("ce 1 · 100%"), filling column 0
    assert band[:, 0].sum() == 0 and band[:, 1:4].any()
    font_rows = np.flatnonzero(band.sum(axis=1) > 50)
    assert len(font_rows) >= 8  # still a readable band of text, not shrunk to nothing
    # the same face in the photo shown 5x enlarged: a label of an ordinary size (at most 1/24 of the
    # image's side plus its padding), not a band as wide as the photo
    big = draw_faces(_blank(560, 560), [FaceMark(points=None, box=(10, 100, 540, 450), label=label)])
    rows = np.flatnonzero(np.all(np.abs(big.astype(int) - BOX_COLOR) <= 30, axis=-1).sum(axis=1) > 100)
    assert 11 <= len(rows) <= 560 / 24 + 8, len(rows)
    from PIL import ImageDraw

    from kpcore.live.render import _label_font
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font, (x0, _, x1, _) = _label_font(draw, label, 4 * 14, 4 * 112 - 16)
    assert x1 - x0 <= 4 * 112 - 16 < _label_font(draw, label, 4 * 14, 10_000)[1][2]


def test_enlarge_repeats_pixels_and_moves_points_with_them() -> None:
    from kpcore.live.render import display_factor, enlarge, enlarged_points

    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    big = enlarge(image, 4)
    assert big.shape == (8, 12, 3)
    assert (big[0:4, 4:8] == image[0, 1]).all() and (big[4:8, 8:12] == image[1, 2]).all()  # no smoothing
    # pixel centre (1, 0) covers big pixels 4..7: its centre is 5.5
    assert enlarged_points(np.array([[1.0, 0.0]]), 4).tolist() == [[5.5, 1.5]]
    assert display_factor(112, 112, 480) == 5 and display_factor(600, 800, 480) == 1
    assert display_factor(150, 100, 480) == 4
    with pytest.raises(ValueError, match="whole number"):
        enlarge(image, 0)
