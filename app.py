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

Two middlewares wrap both apps: :class:`SecurityHeaders` (below) and
:class:`webapp.serving.RequestGuard`, which refuses demo requests naming files
outside Gradio's upload folder (before Gradio copies them) and answers a queue
join with "busy, try again" in words when the queue, or one tab's share of it, is full.
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
from webapp.serving import RequestGuard  # noqa: E402

GRADIO_PATH = "/gradio"
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
app.mount("/", pin_base_url(dashboard))  # webapp/base_url.py: no 404s when a page's URL is opened
app.add_middleware(RequestGuard, blocks=demo, prefix=GRADIO_PATH)
app.add_middleware(SecurityHeaders)  # added last: outermost, so refusals get the headers too
