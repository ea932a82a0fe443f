"""The evaluation views of the dashboard (comparison, slices, robustness) and the fixed
defects of the older pages, under Streamlit's AppTest with synthetic saved results.

Two IMM checkpoints and one reference (saved results only, as dlib's would be) are
evaluated on the same 12 validation images; see tests/webapp_fixtures.py.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from tests.webapp_fixtures import (
    N_VAL,
    POSES,
    image_ids,
    make_bench,
    make_checkpoint,
    make_imm_tree,
    make_reference,
    make_rival_checkpoint,
    make_run,
    predictions,
    serve_app,
    write_per_image,
)
from webapp import records

REPO = Path(__file__).resolve().parents[1]
DASHBOARD = str(REPO / "webapp" / "dashboard.py")
APPTEST_TIMEOUT = 90
GROUP_PREFIX = "imm_face · val ("  # the repo's own IMM results join this group too
A, B, REF = "test-face58 · val", "test-face58-rival · val", "test-ref · val"


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(DASHBOARD, default_timeout=APPTEST_TIMEOUT).run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def pick_group(at: AppTest, key: str) -> None:
    box = at.selectbox(key=key)
    box.set_value(next(o for o in box.options if o.startswith(GROUP_PREFIX))).run()


def charts(at: AppTest) -> list:
    return list(at.get("plotly_chart"))


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


@pytest.fixture
def eval_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Two checkpoints and a reference on the same images, runs, no dataset."""
    runs, checkpoints, data = tmp_path / "runs", tmp_path / "checkpoints", tmp_path / "data"
    for d in (runs, checkpoints, data):
        d.mkdir()
    make_run(runs, "nose-lr1e-3-k5", lr=1e-3, kernel=5, seed=1)
    heat = make_run(runs, "face-heatmap", lr=1e-3, kernel=5, seed=4, task="imm_face", layout="imm", k=58)
    config = yaml.safe_load((heat / "config.yaml").read_text())
    config["loss"] = {"name": "integral", "kwargs": {}}
    (heat / "config.yaml").write_text(yaml.safe_dump(config))
    future = time.time() + 24 * 3600  # newer than any real run of the repo
    for i, run in enumerate(sorted(runs.iterdir())):
        os.utime(run, (future + i, future + i))
    make_checkpoint(checkpoints)
    make_rival_checkpoint(checkpoints)
    make_reference(runs)
    monkeypatch.setenv("KPCORE_RUNS", str(runs))
    monkeypatch.setenv("KPCORE_CHECKPOINTS", str(checkpoints))
    monkeypatch.setenv("KPCORE_BENCH", str(make_bench(tmp_path / "bench.json")))
    monkeypatch.setenv("KPCORE_DATA", str(data))
    return {"runs": runs, "checkpoints": checkpoints, "data": data}


def source(label: str) -> records.EvalSource:
    return next(s for s in records.list_eval_sources() if s.label == label)


# ------------------------------------------------------------------ records
def test_sources_of_one_test_set_group_together_and_the_flagship_leads(eval_env) -> None:
    sources = records.list_eval_sources()
    groups = records.comparable_groups(sources)
    members = [s.label for s in groups[("imm_face", "val")]]
    assert {A, B, REF} <= set(members)
    ref = source(REF)
    assert ref.kind == "reference" and ref.layout == "imm" and ref.task == "imm_face"  # inferred from 58 points
    if (REPO / "checkpoints" / records.FLAGSHIP / "eval" / "test").is_dir():
        assert sources[0].label == f"{records.FLAGSHIP} · test"


def test_tail_table_matches_numpy_on_the_common_images(eval_env) -> None:
    aligned = records.aligned_nme([source(A), source(B)])
    assert list(aligned.index) == image_ids() and list(aligned.columns) == [A, B]
    table = records.tail_table(aligned).set_index("model")
    nme = source(B).per_image["nme"].to_numpy()
    assert table.loc[B, "NME (%)"] == pytest.approx(100 * nme.mean())
    assert table.loc[B, "P95 (%)"] == pytest.approx(100 * np.percentile(nme, 95))
    assert table.loc[B, "failure rate @ 8% (%)"] == pytest.approx(100 * np.mean(nme > 0.08))


def test_improved_worsened_counts_each_face_once() -> None:
    a = np.array([0.05, 0.05, 0.05, 0.05])
    b = np.array([0.02, 0.049, 0.06, 0.09])
    assert records.improved_worsened(a, b, 0.005) == {"improved": 1, "worsened": 2, "same": 1}


def test_flagging_curve_starts_at_the_mean_and_never_beats_the_oracle() -> None:
    rng = np.random.default_rng(0)
    nme = rng.uniform(0.01, 0.2, 200)
    conf = 1 - nme + rng.normal(0, 0.05, 200)
    curve = records.flagging_curve(nme, conf)
    assert curve["nme_pct"].iloc[0] == pytest.approx(100 * nme.mean())
    assert (curve["oracle_pct"] <= curve["nme_pct"] + 1e-9).all()
    assert curve["nme_pct"].iloc[-1] < curve["nme_pct"].iloc[0]  # informative confidence helps


def test_region_errors_merge_left_and_right() -> None:
    assert records.region_names({"left_eye": [0], "right_eye": [1], "jaw": [2], "left_brow": [3]}) == \
        {"eyes": [0, 1], "jaw": [2], "brows": [3]}


# ---------------------------------------------------------------- comparison
def test_compare_page_table_ced_scatter_and_both_overlays(eval_env) -> None:
    at = open_page("compare")
    pick_group(at, "compare_group")
    at.multiselect(key="compare_models").set_value([A, B, REF]).run()
    table = next(d.value for d in at.dataframe if "P95 (%)" in d.value.columns)
    assert list(table["model"]) == [A, B, REF]
    assert {"NME (%)", "P90 (%)", "P95 (%)", "P99 (%)", "AUC @ 8%"} <= set(table.columns)
    assert len(charts(at)) == 2  # CED overlaid, A-vs-B scatter
    at.selectbox(key="compare_b").set_value(B).run()
    at.selectbox(key="compare_a").set_value(A).run()
    counts = {m.label: int(m.value) for m in at.metric}
    assert sum(counts.values()) == N_VAL
    diff = source(B).per_image["nme"] - source(A).per_image["nme"]
    assert counts["B better than A"] == int((diff < -0.005).sum())
    face = at.selectbox(key="compare_face")
    assert face.value == str(source(A).per_image["image"].iloc[int(np.argmax(np.abs(diff.to_numpy())))])
    shown = [im.proto.imgs[0].caption for im in at.image]
    assert len(shown) == 2 and shown[0].startswith(A) and shown[1].startswith(B)
    at.number_input(key="compare_thr").set_value(50.0).run()  # nothing moves by 50 points
    assert {m.label: int(m.value) for m in at.metric}["within the threshold"] == N_VAL


def test_compare_page_without_a_pair_says_what_to_evaluate(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(records, "REPO_ROOT", tmp_path)  # not the repo's own checkpoints
    checkpoints = tmp_path / "only"
    checkpoints.mkdir()
    make_checkpoint(checkpoints)  # one model on its test set: nothing to compare with
    monkeypatch.setenv("KPCORE_CHECKPOINTS", str(checkpoints))
    monkeypatch.delenv("KPCORE_RUNS", raising=False)
    at = open_page("compare")
    assert "No two models were evaluated on the same images" in at.info[0].value
    assert "kpcore evaluate" in at.info[0].value


# -------------------------------------------------------------------- slices
def test_slices_page_regions_pose_size_and_confidence(eval_env) -> None:
    at = open_page("slices")
    pick_group(at, "slices_group")
    at.multiselect(key="slices_models").set_value([B, A]).run()  # B has pose and confidence
    assert len(charts(at)) == 5  # regions, pose classes, face size, error vs confidence, flagging
    text = captions(at)
    assert "Images per bin: " + ", ".join(f"{p} 4" for p in POSES) in text
    assert f"{B}: Spearman correlation of confidence and NME -" in text  # fixture: lower confidence, larger error
    assert f"{A}: Spearman" not in text  # A saved no confidence


def test_slices_page_without_pose_or_confidence_says_so(eval_env) -> None:
    at = open_page("slices")
    pick_group(at, "slices_group")
    at.multiselect(key="slices_models").set_value([A]).run()
    text = captions(at)
    assert "no `pose` column" in text and "No `confidence` column" in text
    assert len(charts(at)) == 2  # regions, face size


# ---------------------------------------------------------------- robustness
def test_robustness_page_draws_one_chart_per_perturbation(eval_env) -> None:
    at = open_page("robustness")
    pick_group(at, "robust_group")
    assert B in at.multiselect(key="robust_models").value  # a new test set opens with all its models
    at.multiselect(key="robust_models").set_value([B]).run()  # the repo's own IMM results join the group too
    assert len(charts(at)) == 2  # blur, rotate
    assert "NME in % of the inter-ocular distance" in captions(at)


def test_robustness_page_names_a_broken_file(eval_env) -> None:
    path = eval_env["checkpoints"] / "test-face58-rival" / "eval" / "val" / "robustness.csv"
    pd.DataFrame({"perturbation": ["blur"], "level": [1]}).to_csv(path, index=False)
    at = open_page("robustness")
    assert any("missing columns ['nme', 'strength']" in w.value for w in at.warning)


# ------------------------------------------------------------ older pages
def test_runs_page_separates_heatmap_losses_and_shows_nme_in_percent(eval_env) -> None:
    at = open_page("runs")
    at.multiselect(key="runs_selected").set_value(["face-heatmap", "nose-lr1e-3-k5"]).run()
    assert "`face-heatmap` (integral): trained on a heatmap loss" in captions(at)
    metrics = next(d.value for d in at.dataframe if "best val NME (%)" in d.value.index)
    assert "best val NME (%)" in metrics.index and "best_val_nme" not in metrics.index
    best = float(metrics.loc["best val NME (%)", "face-heatmap"])
    run = next(r for r in records.list_runs() if r.name == "face-heatmap")
    assert best == pytest.approx(100 * run.metrics["val_nme"].min(), rel=1e-3)
    assert list(metrics.columns) == ["face-heatmap", "nose-lr1e-3-k5"]  # every chosen run has its column


def test_errors_page_disables_overlay_toggles_over_a_thumbnail_and_has_a_legend(eval_env) -> None:
    at = open_page("errors")
    at.selectbox(key="errors_source").set_value(A).run()
    assert at.toggle(key="errors_lines").proto.disabled and at.toggle(key="errors_ids").proto.disabled
    text = captions(at)
    assert ":red[" in text and ":green[" in text
    assert text.count("Original images not found") == 1 and "--data-root" not in text
    assert "NME" in at.image[0].proto.imgs[0].caption


def test_errors_page_toggles_redraw_dataset_images(eval_env) -> None:
    make_imm_tree(eval_env["data"], stems=tuple(image_ids()))
    at = open_page("errors")
    at.selectbox(key="errors_source").set_value(A).run()
    assert not at.toggle(key="errors_lines").proto.disabled
    before = at.image[0].proto.imgs[0].url
    at.toggle(key="errors_ids").set_value(True).run()
    assert not at.exception and at.image[0].proto.imgs[0].url != before


def test_failure_captions_carry_each_images_nme(eval_env) -> None:
    at = open_page("failures")
    at.selectbox(key="failures_source").set_value(A).run()
    nme = source(A).per_image.set_index("image")["nme"]
    for im in at.image:
        caption = im.proto.imgs[0].caption
        image_id = caption.split(" · ")[1]
        assert caption.endswith(f"NME {100 * nme[image_id]:.2f}%")


def test_data_page_without_data_offers_no_task_and_labels_thumbnails(eval_env) -> None:
    at = open_page("data")
    assert not list(at.get("selectbox")) or "data_task" not in [s.key for s in at.selectbox]
    assert len(at.info) == 1 and captions(at).count("python -m kpcore download imm") == 1
    assert "Each tile: model" in at.image[0].proto.imgs[0].caption


def test_data_page_lists_only_tasks_with_data(eval_env) -> None:
    make_imm_tree(eval_env["data"])
    at = open_page("data")
    assert set(at.selectbox(key="data_task").options) == {"imm_nose", "imm_face"}


def test_filters_page_feature_maps_of_a_dataset_image_and_counts(eval_env) -> None:
    make_imm_tree(eval_env["data"])
    at = open_page("filters")
    at.selectbox(key="filters_model").set_value("nose-lr1e-3-k5/best").run()
    assert any("filters of" in c and "showing all" in c for c in captions(at).splitlines())
    shown = [im.proto.imgs[0].caption for im in at.image]
    assert len(shown) == 3 and "33-1m (imm_nose val)" in shown[1]
    assert "showing all" in shown[2]


def test_filters_page_never_feeds_a_marked_up_thumbnail(eval_env) -> None:
    at = open_page("filters")
    at.selectbox(key="filters_model").set_value("test-face58").run()
    assert not at.exception
    shown = [im.proto.imgs[0].caption for im in at.image]
    if any((REPO / "webapp" / "examples").glob("*.jpg")):  # a shipped example photo is the default
        assert len(shown) == 3 and "model input: example photo" in shown[1]
    else:
        assert len(shown) == 1 and "Upload a face photo" in at.info[0].value
    assert not any("thumbnail" in c for c in shown)


# ------------------------------------------------ issue 19: what a newcomer met
def write_summary(folder: Path, **fields) -> None:
    (folder / "summary.json").write_text(json.dumps(fields))


def test_a_checkpoint_evaluated_on_another_dataset_joins_that_dataset_s_test_set(eval_env, monkeypatch) -> None:
    """A 300-W checkpoint's `mtfl-val` results and dlib's are one test set ("ibug300w · mtfl-val"
    and "mtfl · mtfl-val" were listed apart): the evaluation's own task names the faces."""
    monkeypatch.setattr(records, "REPO_ROOT", eval_env["data"])  # not the repo's own results
    folder = make_checkpoint(eval_env["checkpoints"], name="test-face68")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "task": "ibug300w"}))
    for split_dir in (folder / "eval" / "mtfl-val", make_reference(eval_env["runs"], "test-dlib", split="mtfl-val")):
        split_dir.mkdir(parents=True, exist_ok=True)
        ids, pred, true = predictions(5, seed=3)
        write_per_image(split_dir / "per_image.csv", ids, pred, true, norm=40.0)
        write_summary(split_dir, task="mtfl", split="mtfl-val", layout="mtfl")
    groups = records.comparable_groups(records.list_eval_sources())
    labels = [s.label for s in groups[("mtfl", "mtfl-val")]]
    assert labels == ["test-face68 · mtfl-val", "test-dlib · mtfl-val"]
    assert ("ibug300w", "mtfl-val") not in groups
    assert source("test-face68 · mtfl-val").task == "mtfl"  # where its images are looked for


def two_test_sets(eval_env) -> str:
    """A second test set with two models beside the IMM val one; returns its option prefix."""
    for name in ("test-refA", "test-refB"):
        make_reference(eval_env["runs"], name, split="test")
    return "imm_face · test ("


@pytest.mark.parametrize(("page", "group", "models", "least"), [
    ("compare", "compare_group", "compare_models", 2), ("slices", "slices_group", "slices_models", 1)])
def test_switching_the_test_set_keeps_a_model_list(eval_env, page, group, models, least) -> None:
    """Model comparison and Error slices emptied their model list on a new test set ("Choose two
    or more models"); they open the new set's models, as Robustness does, and after a visit to
    another page."""
    other = two_test_sets(eval_env)
    at = open_page(page)
    pick_group(at, group)
    assert {A, B} <= set(at.multiselect(key=models).value)
    box = at.selectbox(key=group)
    box.set_value(next(o for o in box.options if o.startswith(other))).run()
    assert at.multiselect(key=models).value == ["test-refA · test", "test-refB · test"]
    assert not any("Choose" in c for c in captions(at).splitlines())
    assert len(charts(at)) >= least
    # Streamlit drops a page's widget values while another page runs; the page opens on its first
    # test set, so the list must come back on that set too (it once stayed empty there).
    at.selectbox(key=group).set_value(at.selectbox(key=group).options[0]).run()
    at.switch_page("views/runs.py").run()
    at.switch_page(f"views/{page}.py").run()
    assert len(at.multiselect(key=models).value) >= least, "the list came back empty"


def test_runs_page_opens_with_the_shipped_models_runs(eval_env, monkeypatch) -> None:
    """The default selection was the newest run's task, which left out the shipped model's run."""
    monkeypatch.setattr(records, "REPO_ROOT", eval_env["data"])  # not the repo's own checkpoints
    folder = eval_env["checkpoints"] / "test-face58"
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "records": "records/face-heatmap"}))
    at = open_page("runs")
    assert at.multiselect(key="runs_selected").value == ["face-heatmap"]  # nose-lr1e-3-k5 is newer


def test_log_ticks_label_every_panel_several_times() -> None:
    from webapp.figures import log_ticks

    assert log_ticks(np.array([1.54, 20.0])) == [2, 5, 10, 20]
    assert log_ticks(np.array([3.68, 44.5])) == [3.7, 5, 10, 20]  # the best value labelled too
    assert log_ticks(np.array([3.68, 8.19])) == [4, 5, 6, 7, 8]
    narrow = log_ticks(np.array([2.27, 2.39]))  # a fine-tuning run: less than a tenth of a decade
    assert len(narrow) >= 3 and all(2.27 <= t <= 2.39 for t in narrow)
    assert log_ticks(np.array([np.nan, -1.0])) == []


def test_training_curves_label_nme_ticks_with_percent_and_losses_more_than_once(eval_env) -> None:
    """The NME axis read "5 4 3 2 10% 9 8" (which "5"?) and the loss panel had one tick."""
    from webapp import figures

    fig = figures.training_curves(records.list_runs()[:3]).to_plotly_json()["layout"]
    for axis in ("yaxis", "yaxis2", "yaxis3"):
        assert fig[axis]["type"] == "log" and len(fig[axis]["tickvals"]) >= 3, axis
    assert all(t.endswith("%") for t in fig["yaxis3"]["ticktext"])
    assert not any(t.endswith("%") for t in fig["yaxis"]["ticktext"])


def test_comparison_scatter_has_no_corner_dots_and_a_short_x_title() -> None:
    from webapp import figures

    aligned = pd.DataFrame({"face68-300w · test": [0.03, 0.05], "dlib · test": [0.04, 0.04]},
                           index=["a", "b"])
    fig = figures.nme_scatter(aligned, "face68-300w · test", "dlib · test", 0.005)
    band = fig.data[0]
    assert band.fill == "toself" and band.mode == "lines"  # default mode drew a marker at each corner
    assert fig.layout.xaxis.title.text == "A: face68-300w · test · NME (%)"


def test_slices_confidence_charts_keep_short_vertical_titles_and_name_the_normalisation(eval_env) -> None:
    """In half a page, "NME (% of inter-ocular distance)" ran up into the chart's title; the
    titles say "NME (%)" and the caption under the charts names the distance."""
    at = open_page("slices")
    pick_group(at, "slices_group")
    at.multiselect(key="slices_models").set_value([B]).run()
    specs = {s["layout"]["title"]["text"]: s["layout"] for s in (json.loads(c.proto.spec) for c in charts(at))}
    assert specs["Error vs confidence"]["yaxis"]["title"]["text"] == "NME (%)"
    flagging = next(v for k, v in specs.items() if k.startswith("Error left when"))
    assert len(flagging["yaxis"]["title"]["text"]) <= 25
    lines = captions(at).splitlines()
    below_charts = lines[next(i for i, line in enumerate(lines) if "Spearman" in line) - 1]
    assert below_charts.startswith("NME in % of the inter-ocular distance")


def test_errors_table_puts_the_errors_before_the_long_image_id(eval_env) -> None:
    at = open_page("errors")
    at.selectbox(key="errors_source").set_value(A).run()
    table = next(d for d in at.dataframe if "px_error" in d.value.columns)
    assert list(table.proto.column_order) == ["nme_pct", "px_error", "image"]


BENCH_EXTRA = [
    {"model": "dlib shape_predictor_68", "architecture": "regression trees (dlib)", "task": "ibug300w",
     "split": "test", "n": 600, "nme": 0.031, "mean_px_error": 3.8, "threads": 1, "latency_ms_b1": 1.4},
    {"section": "video", "model": "face68-300w", "method": "kpcore track", "clip": "640x480, 150 frames",
     "nme": 0.0273, "jitter": 0.00234, "missed": 0, "loop_fps": 156.1, "command_fps": 86.0, "threads": 2,
     "backend": "onnxruntime int8", "machine": "x86_64", "torch": "2.14", "measured": "2026-12-02"},
]


def test_bench_page_percent_no_none_and_says_which_path_each_time_is(eval_env, tmp_path) -> None:
    """NME was a fraction in the models table, dlib's missing cells read "None", the table and
    the accuracy chart timed the network in PyTorch (11 ms) beside a speed chart of the whole call
    (1.7 ms) without saying so, and point labels were cut at the chart's edges."""
    path = Path(os.environ["KPCORE_BENCH"])
    rows = json.loads(path.read_text()) + BENCH_EXTRA
    path.write_text(json.dumps(rows))
    at = open_page("bench")
    models = next(d.value for d in at.dataframe if "timed" in d.value).set_index("model")
    assert "nme" not in models and models.loc["face68-300w", "NME (%)"] == pytest.approx(4.8)
    assert models.loc["dlib shape_predictor_68", "timed"] == "whole call (dlib)"
    assert models.loc["face68-300w", "timed"] == "network, PyTorch"
    assert len(at.dataframe) == 2 and all(d.proto.placeholder == "—" for d in at.dataframe)
    video = next(d.value for d in at.dataframe if "method" in d.value)
    assert list(video.columns[:5]) == ["method", "loop_fps", "command_fps", "jitter (%)", "NME (%)"]
    assert video["jitter (%)"].iloc[0] == pytest.approx(0.234)
    specs = [json.loads(c.proto.spec) for c in charts(at)]
    chart = next(s for s in specs if s["layout"]["title"]["text"].startswith("ibug300w"))
    traces = {t["name"]: t for t in chart["data"]}
    whole = traces["whole per-face call"]  # the default path (speed section) and dlib
    assert whole["x"] == [1.2, 1.0] and whole["y"] == pytest.approx([4.8, 3.1])
    assert whole["text"] == ["face68-300w (default path)", "dlib shape_predictor_68"]
    assert traces["network alone, PyTorch float32"]["x"] == [9.5]
    assert whole["textposition"] == ["top center", "top right"] and \
        traces["network alone, PyTorch float32"]["textposition"] == ["top left"]
    assert "diamond" in captions(at) and "1.20 ms" in captions(at)


def test_dashboard_icon_is_served_by_the_app() -> None:
    """The tab icon was a Material Symbol, which the browser fetches from fonts.gstatic.com."""
    from PIL import Image as PILImage

    source = (REPO / "webapp" / "dashboard.py").read_text()
    assert "page_icon=PAGE_ICON" in source
    with PILImage.open(REPO / "webapp" / "assets" / "favicon.png") as icon:
        assert icon.format == "PNG" and icon.size[0] <= 64


def test_base_url_script_goes_first_in_the_head() -> None:
    from webapp.base_url import PAGE_PATH, inject

    html = inject(b"<html><head><title>t</title></head></html>", "")
    assert html.index(b"BACKEND_BASE_URL") < html.index(b"<title>")
    assert b"MAIN_PAGE_BASE_URL" in html and b'location.origin + ""' in html
    assert b'location.origin + "/proxy"' in inject(b"<head></head>", "/proxy/")
    assert [bool(PAGE_PATH.fullmatch(p)) for p in ("/", "/bench", "/_stcore/health", "/static/a.js",
                                                   "/bench/_stcore/health")] == [True, True, False, False, False]


def test_robustness_keeps_its_models_after_a_visit_to_another_page(eval_env) -> None:
    at = open_page("robustness")
    shown = at.multiselect(key="robust_models").value
    assert shown
    at.switch_page("views/runs.py").run()
    at.switch_page("views/robustness.py").run()
    assert at.multiselect(key="robust_models").value == shown


# ------------------------------------------------------------ served, in a browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.mark.browser
@pytest.mark.slow
def test_opening_a_page_url_asks_for_nothing_missing_and_the_icon_is_local(tmp_path: Path) -> None:
    """Every page but `/` asked for `/<page>/_stcore/health` and `.../host-config` (two 404s in the
    console), and the tab icon came from fonts.gstatic.com."""
    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed: apt-get install -y chromium chromium-driver")
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    make_run(runs, "nose-lr1e-3-k5", lr=1e-3, kernel=5, seed=1)
    env = {"KPCORE_RUNS": str(runs), "KPCORE_BENCH": str(make_bench(tmp_path / "bench.json")),
           "KPCORE_DATA": str(tmp_path / "nodata")}
    with serve_app(env, tmp_path / "server.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            missing: list[str] = []
            page.on("response", lambda r: missing.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("requestfailed", lambda r: missing.append(f"failed {r.url}"))
            page.goto(url + "/bench")
            page.get_by_role("heading", name="Benchmarks").wait_for(timeout=60_000)
            page.get_by_role("link", name="Model comparison").click()
            page.get_by_role("heading", name="Model comparison").wait_for(timeout=60_000)
            page.wait_for_timeout(2000)
            icon = page.evaluate("document.querySelector(\"link[rel='shortcut icon']\").href")
        finally:
            browser.close()
    assert missing == []
    assert icon.startswith(url + "/media/"), icon
