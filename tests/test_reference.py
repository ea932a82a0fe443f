"""dlib's predictor as a reference: optional, lazily imported, in kpcore's coordinate convention."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kpcore.evaluation.reference import DlibLandmarks

from .conftest import REPO, needs_300w

needs_dlib = pytest.mark.skipif(not DlibLandmarks.available(),
                                reason="dlib or its predictor file is missing (pip install dlib-bin; "
                                       "apt-get install libdlib-data)")


def test_importing_kpcore_does_not_import_dlib():
    code = "import sys, kpcore, kpcore.evaluation.reference, kpcore.live.predict; print('dlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_predictor_file_names_the_fix(tmp_path):
    assert not DlibLandmarks.available(tmp_path / "nope.dat")
    if not DlibLandmarks.available():
        with pytest.raises(ImportError, match="dlib-bin"):
            DlibLandmarks(tmp_path / "nope.dat")
    else:
        with pytest.raises(FileNotFoundError, match="libdlib-data"):
            DlibLandmarks(tmp_path / "nope.dat")


def test_env_variable_names_the_predictor(tmp_path, monkeypatch):
    fake = tmp_path / "p.dat"
    monkeypatch.setenv("KPCORE_DLIB_PREDICTOR", str(fake))
    from kpcore.evaluation.reference import predictor_path

    assert predictor_path() == fake
    assert not DlibLandmarks.available()


@needs_dlib
def test_bad_inputs_are_clear_errors():
    d = DlibLandmarks()
    with pytest.raises(ValueError, match="RGB uint8"):
        d.predict_crops(np.zeros((10, 10), np.uint8), [(0, 0, 5, 5)])
    with pytest.raises(ValueError, match="one box per image"):
        d.predict_crops([np.zeros((10, 10, 3), np.uint8)] * 2, [(0, 0, 5, 5)])
    with pytest.raises(ValueError, match="no area"):
        d.predict_crops(np.zeros((10, 10, 3), np.uint8), [(0, 0, 0, 5)])


@needs_dlib
@needs_300w
def test_dlib_on_300w_faces_is_accurate_in_our_convention(data_root):
    """On 300-W faces with their XML boxes, dlib lands within a few % of the eye distance.

    The mean signed offset is also checked against the box size: dlib has a small
    bias of its own (about 0.3% of the box width on helen/testset), while a slip in
    the box convention (a wrong ``right`` edge, width/height swapped) shifts or
    scales every point by much more.
    """
    from kpcore.data.datasets import load_300w
    from kpcore.data.imageio import load_image

    samples = [s for s in load_300w("test", data_root) if s.image_id.startswith("helen/testset")][:12]
    d = DlibLandmarks()
    images = [load_image(s.image_path) for s in samples]
    pts = d.predict_crops(images, [s.box for s in samples])
    assert pts.shape == (len(samples), 68, 2) and pts.dtype == np.float32
    truth = np.stack([s.points for s in samples])
    nme = np.linalg.norm(pts - truth, axis=-1).mean(-1) / [s.norm_distance for s in samples]
    assert nme.mean() < 0.06, nme
    widths = np.array([s.box[2] for s in samples], np.float32)[:, None]
    offset = ((pts - truth).mean(1) / widths).mean(0)
    assert np.abs(offset).max() < 0.01, offset
    # one array for all boxes gives the same as a list
    one = d.predict_crops(images[0], [samples[0].box, samples[0].box])
    np.testing.assert_array_equal(one[0], pts[0])
    np.testing.assert_array_equal(one[1], pts[0])
