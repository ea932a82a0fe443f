"""``kpcore bench --sections batch``'s rows: which methods, on which collections (no timing is checked)."""

from __future__ import annotations

import pytest

from kpcore.evaluation import batch_bench

from .conftest import needs_300w


@needs_300w
@pytest.mark.slow
def test_the_batch_section_measures_a_second_larger_collection(data_root, monkeypatch) -> None:
    """First collection: 1 and 2 workers and the SIGKILL + resume row; then 2 workers again on more
    photos (the same first ones, then MTFL), with the 2-worker table as its reference. Ray, dlib and
    MediaPipe are left out here (their rows are the same code path with another runner)."""
    monkeypatch.setattr(batch_bench, "BATCH_PHOTOS", 12)
    monkeypatch.setattr(batch_bench, "_start_ray", lambda cores: None)
    monkeypatch.setattr(batch_bench, "_helper_python", lambda module, env: None)
    monkeypatch.setattr("kpcore.evaluation.reference.DlibLandmarks.available", staticmethod(lambda: False))
    rows = batch_bench.batch_rows(data_root, model="face68-300w", rounds=2, large=24)
    assert [(r["photos"], r["method"]) for r in rows] == [
        (12, "kpcore local, 1 worker"), (12, "kpcore local, 2 workers"), (12, "SIGKILL + resume (2 workers)"),
        (24, "kpcore local, 2 workers")]
    first, second = batch_bench.batch_photos(data_root, 12), batch_bench.batch_photos(data_root, 24)
    assert second[:12] == first  # the larger collection starts with the first one
    for r in rows[:2] + rows[3:]:
        assert r["rounds"] == 2 and len(r["photos_per_s_runs"]) == 2 and r["photos_per_s"] == max(
            r["photos_per_s_runs"]), r
        assert r["unreadable"] == 0 and r["faces"] >= r["photos"] - r["no_face"], r
    assert rows[2]["faces_lost"] == 0 and rows[2]["rows_repeated"] == 0, rows[2]
