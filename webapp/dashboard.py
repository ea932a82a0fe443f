"""kpcore dashboard: runs, errors, failure cases, model comparison, error slices, robustness,
filters, data, benchmarks, live demo.

Run it alone with ``streamlit run webapp/dashboard.py``, or together with the
Gradio demo on one port with ``streamlit run app.py``. Each page is a script in
``webapp/views/``; this file only sets up the page and the navigation.

Environment variables (all optional): ``KPCORE_RUNS`` and ``KPCORE_CHECKPOINTS``
add folders of runs / checkpoints, ``KPCORE_BENCH`` points at a bench.json,
``KPCORE_DATA`` is the dataset root, ``KPCORE_BATCH_DIR`` the folder of batch tables
(``kpcore predict ... --out TABLE``) the Batch triage page opens.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

# `streamlit run webapp/dashboard.py` puts webapp/ on sys.path, not the repository
# root that holds the kpcore and webapp packages. Pages run in this process after
# this script, so fixing it once here is enough.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

VIEWS = Path(__file__).resolve().parent / "views"
# The browser tab's icon, served by the app itself: a ":material/...:" icon makes the browser fetch
# an SVG from fonts.gstatic.com, which an offline deployment cannot reach.
PAGE_ICON = Path(__file__).resolve().parent / "assets" / "favicon.png"

PAGES = [
    ("runs.py", "Runs", ":material/show_chart:"),
    ("errors.py", "Per-image errors", ":material/table_chart:"),
    ("failures.py", "Failure cases", ":material/report:"),
    ("compare.py", "Model comparison", ":material/compare:"),
    ("slices.py", "Error slices", ":material/pie_chart:"),
    ("robustness.py", "Robustness", ":material/blur_on:"),
    ("filters.py", "Learned filters", ":material/grid_on:"),
    ("data.py", "Data explorer", ":material/photo_library:"),
    ("bench.py", "Benchmarks", ":material/speed:"),
    ("triage.py", "Batch triage", ":material/checklist:"),
    ("live.py", "Live demo", ":material/photo_camera:"),
]


def show_sources() -> None:
    """Where the pages read from, so a missing run or dataset is easy to explain."""
    from webapp import records

    data = os.environ.get("KPCORE_DATA") or "./data"
    lines = [f"runs: {', '.join(f'`{p}`' for p in records.runs_roots())}",
             f"checkpoints: {', '.join(f'`{p}`' for p in records.checkpoint_roots())}",
             f"data: `{data}`"]
    with st.expander("Sources", icon=":material/folder_open:"):
        st.caption("  \n".join(lines))


def main() -> None:
    st.set_page_config(page_title="kpcore dashboard", page_icon=PAGE_ICON, layout="wide")
    pages = [st.Page(VIEWS / file, title=title, icon=icon, default=(i == 0))
             for i, (file, title, icon) in enumerate(PAGES)]
    nav = st.navigation(pages, position="sidebar")
    with st.sidebar:
        show_sources()
    nav.run()


main()
