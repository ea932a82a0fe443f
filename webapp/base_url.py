"""Tell the dashboard's page where its server is, so opening a page's URL makes no 404s.

Streamlit's page cannot tell from a URL such as ``/bench`` whether ``bench`` is a page of an app
served at ``/`` or an app served under the path ``/bench``, so it tries both: it asks for
``/bench/_stcore/health`` and ``/bench/_stcore/host-config`` (which the server answers with 404s,
on purpose) before ``/_stcore/...``. Every page but ``/`` logged two 404s in the browser's
console. Streamlit's own issue: https://github.com/streamlit/streamlit/issues/7074 (open); its
pull request 11537 added ``window.__streamlit.MAIN_PAGE_BASE_URL`` (with ``BACKEND_BASE_URL``)
so that a host can say where the app is, and left serving them to the host.

:func:`pin_base_url` is that host: it wraps the ``st.App`` that ``app.py`` mounts at ``/`` and
writes both into the HTML of Streamlit's page before its scripts run. Nothing else is changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# "/" and page URLs ("/bench"): one path segment without a dot; Streamlit's own routes start with _stcore.
PAGE_PATH = re.compile(r"/(?:(?!_stcore\b)[^/.]+)?")
HEAD_TAG = b"<head>"
SCRIPT = ("<script>(function () {{ const base = location.origin + {root} + '/'; "
          "window.__streamlit = Object.assign(window.__streamlit || {{}}, "
          "{{BACKEND_BASE_URL: base, MAIN_PAGE_BASE_URL: base}}); }})();</script>")
ETAG_SUFFIX = "-base"  # the page's bytes differ from the file Streamlit's ETag describes


def base_url_script(root_path: str) -> bytes:
    """The ``<script>`` that names the app's base URL: the page's origin plus ``root_path``
    (empty at the root of the host; a proxy's prefix otherwise)."""
    return SCRIPT.format(root=json.dumps(root_path.rstrip("/"))).encode()


def inject(html: bytes, root_path: str) -> bytes:
    """``html`` with :func:`base_url_script` right after ``<head>``; unchanged when it has none."""
    i = html.find(HEAD_TAG)
    if i < 0:
        return html
    i += len(HEAD_TAG)
    return html[:i] + base_url_script(root_path) + html[i:]


def pin_base_url(app: ASGIApp) -> ASGIApp:
    """``app`` (Streamlit's ``st.App``) whose HTML pages carry the script of :func:`inject`."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or not PAGE_PATH.fullmatch(scope.get("path", "")):
            await app(scope, receive, send)
            return
        # Ask for the page uncompressed, so its text can be edited.
        scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k.lower() != b"accept-encoding"])
        start: Message | None = None
        body: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if not headers.get(b"content-type", b"").startswith(b"text/html"):
                    await send(message)  # not the page (e.g. a 304): passed on as it is
                    return
                start = message
                return
            if start is None:
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            html = inject(b"".join(body), scope.get("root_path", ""))
            headers = []
            for k, v in start.get("headers", []):
                if k.lower() == b"content-length":
                    v = str(len(html)).encode()
                elif k.lower() == b"etag":
                    v = v.rstrip(b'"') + ETAG_SUFFIX.encode() + b'"' if v.endswith(b'"') else v + ETAG_SUFFIX.encode()
                headers.append((k, v))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": html})

        await app(scope, receive, capture)

    return wrapped
