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
4. ``webapp/static/`` is served at ``/static-kpcore/`` (the Webcam tab's in-browser
   tracker and the onnxruntime-web it runs on), with the two models it loads at
   ``/static-kpcore/models/`` (:data:`WEBCAM_MODEL_FILES`, nothing else of ``checkpoints/``);
5. the dashboard is mounted at ``/`` last, so it gets every other path
   (``/_stcore/...``, ``/static/...``, page URLs).

The dashboard's Live page embeds ``/gradio/`` in an iframe, same origin, so the
pair works behind a single forwarded port (Docker, Hugging Face Spaces).

Two middlewares wrap both apps: :class:`SecurityHeaders` (below) and
:class:`webapp.serving.RequestGuard`, which refuses demo requests naming files
outside Gradio's upload folder (before Gradio copies them) and answers a queue
join with "busy, try again" in words when the queue, or one tab's share of it, is full.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

# Before gradio is imported: no telemetry calls from a server that may have no internet.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import streamlit as st  # noqa: E402
from fastapi import FastAPI, HTTPException  # noqa: E402
from fastapi.responses import FileResponse  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402

from kpcore.paths import CHECKPOINTS_DIR  # noqa: E402
from webapp.base_url import pin_base_url  # noqa: E402
from webapp.checkpoints import find_checkpoint  # noqa: E402
from webapp.live import build_demo  # noqa: E402
from webapp.serving import RequestGuard  # noqa: E402

GRADIO_PATH = "/gradio"
STATIC_PATH = "/static-kpcore"
"""webapp/static/ (the Webcam tab's in-browser tracker and the onnxruntime-web it runs on)."""
STATIC_DIR = Path(__file__).resolve().parent / "webapp" / "static"
WEBCAM_MODEL_FILES = frozenset({"face68-300w/config.json", "face68-300w/model.onnx",
                                "face-detector-blazeface/config.json",
                                "face-detector-blazeface/blazeface_short_range.onnx"})
"""The checkpoint files the in-browser tracker loads, served at ``/static-kpcore/models/<folder>/<file>``."""
# Module scripts and WebAssembly need their own types (with nosniff the browser refuses a guess);
# Python 3.11's table knows .mjs only where the system's mime.types does.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")
MAX_UPLOAD = "20mb"  # photos for the live demo; matches server.maxUploadSize in .streamlit/config.toml
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),  # an upload served back is never run as a script or page
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    # Who may show the app in a frame: itself (the Live page's iframe) and a Hugging Face Space page.
    # Not X-Frame-Options DENY, which would blank the app inside the Space.
    (b"content-security-policy", b"frame-ancestors 'self' https://huggingface.co https://*.hf.space"),
)


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every HTTP response (dashboard and demo) that lacks them."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                have = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in SECURITY_HEADERS if k not in have)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


dashboard = st.App(Path(__file__).resolve().parent / "webapp" / "dashboard.py")
app = FastAPI(lifespan=dashboard.lifespan(), docs_url=None, redoc_url=None, openapi_url=None)
demo = build_demo()
# root_path: file URLs carry the mount path even on non-queued routes and behind a proxy (X-Forwarded-Host)
gr.mount_gradio_app(app, demo, path=GRADIO_PATH, root_path=GRADIO_PATH, ssr_mode=False, footer_links=["api"],
                    max_file_size=MAX_UPLOAD)


@app.get(STATIC_PATH + "/models/{folder}/{name}", include_in_schema=False)
def webcam_model_file(folder: str, name: str) -> FileResponse:
    """One of :data:`WEBCAM_MODEL_FILES` (the in-browser tracker's models), nothing else of checkpoints/."""
    if f"{folder}/{name}" not in WEBCAM_MODEL_FILES:
        raise HTTPException(404, "not a file the webcam page loads")
    found = find_checkpoint(folder)  # where the server-side tracker would load it from ($KPCORE_CHECKPOINTS first)
    path = (found or CHECKPOINTS_DIR / folder) / name
    if not path.is_file():
        raise HTTPException(404, f"checkpoints/{folder}/{name} is missing; restore it from the repository")
    return FileResponse(path, media_type="application/json" if name.endswith(".json") else "application/octet-stream")


# Before the dashboard's mount at "/", which would take every path
app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static-kpcore")
app.mount("/", pin_base_url(dashboard))  # webapp/base_url.py: no 404s when a page's URL is opened
app.add_middleware(RequestGuard, blocks=demo, prefix=GRADIO_PATH)
app.add_middleware(SecurityHeaders)  # added last: outermost, so refusals get the headers too
