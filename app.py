"""One server, one port: the Streamlit dashboard at ``/`` and the Gradio demo at ``/gradio/``.

Run with::

    streamlit run app.py --server.port 7860 --server.headless true

Streamlit (1.67+) notices the ASGI app assigned to ``app`` below and serves it
with uvicorn instead of running this file as a script. The recipe:

1. ``st.App(script)`` wraps the dashboard script as an ASGI app;
2. a FastAPI app takes ``dashboard.lifespan()``, so the Streamlit runtime starts
   and stops with the server;
3. ``gr.mount_gradio_app`` mounts the Gradio Blocks at ``/gradio`` (it chains
   Gradio's startup into the same lifespan);
4. the dashboard is mounted at ``/`` last, so it gets every other path
   (``/_stcore/...``, ``/static/...``, page URLs).

The dashboard's Live page embeds ``/gradio/`` in an iframe, same origin, so the
pair works behind a single forwarded port (Docker, Hugging Face Spaces).
"""

from __future__ import annotations

import os
from pathlib import Path

# Before gradio is imported: no telemetry calls from a server that may have no internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import streamlit as st  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from webapp.base_url import pin_base_url  # noqa: E402
from webapp.live import build_demo  # noqa: E402

GRADIO_PATH = "/gradio"
MAX_UPLOAD = "20mb"  # photos for the live demo; matches server.maxUploadSize in .streamlit/config.toml

dashboard = st.App(Path(__file__).resolve().parent / "webapp" / "dashboard.py")
app = FastAPI(lifespan=dashboard.lifespan(), docs_url=None, redoc_url=None, openapi_url=None)
gr.mount_gradio_app(app, build_demo(), path=GRADIO_PATH, ssr_mode=False, footer_links=["api"],
                    max_file_size=MAX_UPLOAD)
app.mount("/", pin_base_url(dashboard))  # webapp/base_url.py: no 404s when a page's URL is opened
