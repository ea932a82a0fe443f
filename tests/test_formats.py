"""Label parsers on tiny fixture files, and their errors on malformed ones."""

import numpy as np
import pytest

from kpcore.data import parse_300w_xml, parse_asf, read_pts
from kpcore.errors import AnnotationError

ASF_HEADER = "######\n# AAM Shape File\n######\n\n# number of model points\n#\n{n}\n\n# model points\n#\n"


def write_asf(path, n=3, lines=None, host="01-1m.jpg"):
    if lines is None:
        lines = [f"0 \t4 \t{0.1 * (i + 1):.8f} \t{0.2 * (i + 1):.8f} \t{i} \t{max(i - 1, 0)} \t{i + 1}" for i in range(n)]
    path.write_text(ASF_HEADER.format(n=n) + "\n".join(lines) + f"\n\n#\n# host image\n#\n{host}\n")
    return path


def test_asf_fractions_become_pixels(tmp_path):
    shape = parse_asf(write_asf(tmp_path / "a.asf", n=3), expected_points=3)
    assert shape.host_image == "01-1m.jpg"
    np.testing.assert_allclose(shape.to_pixels(640, 480), [[64, 96], [128, 192], [192, 288]], atol=1e-4)
    assert shape.paths.tolist() == [0, 0, 0]
    assert shape.connects[1].tolist() == [0, 2]


def test_asf_accepts_extra_trailing_fields(tmp_path):
    # as in 14-5f.asf of the official release
    lines = [f"0 \t4 \t0.5 \t0.5 \t{i} \t0 \t1\t0.00\t0.00\t0.00" for i in range(2)]
    shape = parse_asf(write_asf(tmp_path / "a.asf", n=2, lines=lines), expected_points=2)
    assert shape.points_rel.shape == (2, 2)


@pytest.mark.parametrize("case, lines, n, match", [
    ("wrong count", None, 3, "declares 3 points; IMM shapes have 58"),
    ("truncated", ["0 4 0.1 0.2 0 0 1"], 2, "only 1 point lines"),
    ("text field", ["0 4 zero 0.2 0 0 1", "0 4 0.1 0.2 1 0 1"], 2, "non-numeric"),
    ("too few fields", ["0 4 0.1 0.2", "0 4 0.1 0.2 1 0 1"], 2, "expected 7 fields"),
    ("out of order", ["0 4 0.1 0.2 1 0 1", "0 4 0.1 0.2 0 0 1"], 2, "out of order"),
    ("not fractions", ["0 4 231 0.2 0 0 1", "0 4 0.1 0.2 1 0 1"], 2, "not fractions"),
])
def test_malformed_asf_names_file_and_problem(tmp_path, case, lines, n, match):
    path = write_asf(tmp_path / "bad.asf", n=n, lines=lines)
    expected = 58 if case == "wrong count" else n
    with pytest.raises(AnnotationError, match=match) as e:
        parse_asf(path, expected_points=expected)
    assert "bad.asf" in str(e.value)


def test_asf_empty_and_missing(tmp_path):
    (tmp_path / "empty.asf").write_text("# nothing\n")
    with pytest.raises(AnnotationError, match="empty.asf: empty"):
        parse_asf(tmp_path / "empty.asf")
    with pytest.raises(AnnotationError, match="cannot read"):
        parse_asf(tmp_path / "missing.asf")


def write_pts(path, pts, n=None, close=True):
    n = len(pts) if n is None else n
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
    path.write_text(f"version: 1\nn_points:  {n}\n{{\n{body}\n" + ("}\n" if close else ""))
    return path


def test_pts_is_one_based(tmp_path):
    pts = read_pts(write_pts(tmp_path / "a.pts", [(1.0, 1.0), (10.5, 20.25)]), expected_points=2)
    np.testing.assert_allclose(pts, [[0, 0], [9.5, 19.25]])
    assert pts.dtype == np.float32


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 3}, "n_points is 3 but 2 point lines"),
    ({"close": False}, "no closing"),
])
def test_malformed_pts(tmp_path, kwargs, match):
    path = write_pts(tmp_path / "bad.pts", [(1, 2), (3, 4)], **kwargs)
    with pytest.raises(AnnotationError, match=match) as e:
        read_pts(path, expected_points=None)
    assert "bad.pts" in str(e.value)


def test_pts_wrong_point_count_and_garbage(tmp_path):
    with pytest.raises(AnnotationError, match="expected 68"):
        read_pts(write_pts(tmp_path / "a.pts", [(1, 2)]))
    (tmp_path / "b.pts").write_text("hello world\n")
    with pytest.raises(AnnotationError, match="b.pts"):
        read_pts(tmp_path / "b.pts")


def xml_text(faces):
    out = ["<?xml version='1.0' encoding='ISO-8859-1'?>", "<dataset><name>t</name><images>"]
    for file, boxes in faces:
        out.append(f"<image file='{file}'>")
        for (top, left, w, h), parts in boxes:
            out.append(f"<box top='{top}' left='{left}' width='{w}' height='{h}'>")
            out += [f"<part name='{i:02d}' x='{x}' y='{y}'/>" for i, (x, y) in enumerate(parts)]
            out.append("</box>")
        out.append("</image>")
    out.append("</images></dataset>")
    return "\n".join(out)


def test_xml_boxes_parts_and_relative_images(tmp_path):
    parts = [(i, 2 * i) for i in range(68)]
    (tmp_path / "sub").mkdir()
    xml = tmp_path / "sub" / "labels.xml"
    xml.write_text(xml_text([("imgs/a.jpg", [((5, 7, 50, 60), parts), ((1, 2, 3, 4), parts)])]))
    faces = parse_300w_xml(xml)
    assert len(faces) == 2
    assert faces[0].box == (7.0, 5.0, 50.0, 60.0)  # (left, top, width, height)
    assert faces[0].image == (tmp_path / "sub" / "imgs" / "a.jpg").resolve()
    np.testing.assert_allclose(faces[0].points[10], [10, 20])


@pytest.mark.parametrize("text, match", [
    ("<dataset><images><image file='a.jpg'><box top='1'", "not well-formed"),
    ("<dataset></dataset>", "no <images>"),
    ("<dataset><images><image><box top='1' left='1' width='2' height='2'/></image></images></dataset>", "no file="),
    ("<dataset><images><image file='a.jpg'><box top='x' left='1' width='2' height='2'/></image></images></dataset>",
     "numeric top"),
    ("<dataset><images><image file='a.jpg'><box top='1' left='1' width='2' height='2'>"
     "<part name='00' x='1' y='1'/></box></image></images></dataset>", "lacks parts"),
    ("<dataset><images><image file='a.jpg'><box top='1' left='1' width='2' height='2'>"
     "<part name='99' x='1' y='1'/></box></image></images></dataset>", "bad <part>"),
])
def test_malformed_xml(tmp_path, text, match):
    xml = tmp_path / "bad.xml"
    xml.write_text(text)
    with pytest.raises(AnnotationError, match=match) as e:
        parse_300w_xml(xml)
    assert "bad.xml" in str(e.value)
