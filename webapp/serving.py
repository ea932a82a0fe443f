"""The door of the served Gradio demo: what a request may name, and how much may wait in the queue.

:class:`RequestGuard`, an ASGI middleware in front of the mounted demo
(app.py), reads every JSON request to the demo before Gradio does:

* **Files.** Gradio copies every file a request names into its upload cache
  before any handler runs (whatever ``preprocess`` says), and skips its own
  "was this uploaded?" check for a mounted app; the file route then serves the
  copy. So a request naming a file outside the uploads
  (:func:`webapp.demo_files.accepted_upload`) is refused here with HTTP 403,
  on every route (queue join, ``/call``, ``/run``, webcam ``/stream``), before
  anything is copied. The handlers check again (direct calls, other routes).
* **Queue.** Gradio's ``queue(max_size=...)`` answers a full queue in its own
  terms and has no per-session bound: one client could fill the queue (200
  joins made a real request wait 89 s). More than :data:`QUEUE_MAX_SIZE`
  events waiting -> HTTP 503 "The demo is busy ... Try again in a minute";
  more than :data:`PER_SESSION_LIMIT` events of one session (browser tab,
  ``session_hash``) waiting or running -> HTTP 429 "... try again when they
  finish". A client that invents a new session per request still meets the
  first bound.
"""

from __future__ import annotations

import json
from typing import Any

QUEUE_MAX_SIZE = 32
"""Events waiting at once, all visitors together: ~10 s of photos at ~3.8 photos/s on 2 cores."""
PER_SESSION_LIMIT = 6
"""Events one browser tab may have waiting or running (a page load starts 2, a photo 1)."""
PHOTO_CONCURRENCY = 1
"""Photo predictions run at once. One: onnxruntime already uses both cores of a basic Space, and
Gradio rewrites a result image in place when two requests give the same picture (same photo), which
cut a concurrent download short twice in a 300-request soak with 2 at once."""
JOIN_SUFFIX = "/gradio_api/queue/join"
MAX_JSON_BYTES = 10_000_000
"""A JSON request carries parameters and file references; the largest inline content is a webcam frame."""
BUSY = "The demo is busy: {waiting} requests are waiting (at most {limit}). Try again in a minute."
SESSION_BUSY = ("This page already has {pending} requests waiting or running (at most {limit} per tab); "
                "try again when they finish.")
TOO_LARGE = "This request is too large (over {limit} bytes); upload files instead of inlining them."


def busy_message(queue: Any, session_hash: str | None, max_size: int = QUEUE_MAX_SIZE,
                 per_session: int = PER_SESSION_LIMIT) -> tuple[int, str] | None:
    """``(HTTP status, message)`` when a new event must be refused, else None.

    ``queue`` is the Blocks' Gradio queue: ``len(queue)`` counts the waiting events,
    ``queue.pending_event_ids_session`` the events of each session not yet answered.
    """
    waiting = len(queue)
    if waiting >= max_size:
        return 503, BUSY.format(waiting=waiting, limit=max_size)
    pending = len(getattr(queue, "pending_event_ids_session", {}).get(session_hash, ()))
    if session_hash and pending >= per_session:
        return 429, SESSION_BUSY.format(pending=pending, limit=per_session)
    return None


class RequestGuard:
    """ASGI middleware: refuses, in words, demo requests that name files outside the uploads or find the queue full.

    Args:
        app: The ASGI app it wraps (app.py's FastAPI app).
        blocks: The mounted ``gr.Blocks``; its queue is read on every join.
        prefix: Where the Blocks are mounted (``"/gradio"``).
    """

    def __init__(self, app, blocks, prefix: str, max_size: int = QUEUE_MAX_SIZE,
                 per_session: int = PER_SESSION_LIMIT) -> None:
        self.app, self.blocks = app, blocks
        self.prefix = prefix.rstrip("/") + "/"
        self.join_path = prefix.rstrip("/") + JOIN_SUFFIX
        self.max_size, self.per_session = max_size, per_session

    async def __call__(self, scope, receive, send) -> None:
        if not (scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith(self.prefix)
                and _is_json(scope)):
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_JSON_BYTES:
                await _answer(send, 413, TOO_LARGE.format(limit=MAX_JSON_BYTES))
                return
        refusal = self.refusal(scope["path"], body)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def refusal(self, path: str, body: bytes) -> tuple[int, str] | None:
        """``(HTTP status, message)`` for a request that must not reach Gradio, else None."""
        try:
            request = json.loads(body)
        except ValueError:  # not JSON after all: Gradio answers it
            return None
        message = file_refusal(request)
        if message is not None:
            return 403, message
        if path == self.join_path:
            session = request.get("session_hash") if isinstance(request, dict) else None
            return busy_message(self.blocks._queue, session if isinstance(session, str) else None,
                                self.max_size, self.per_session)
        return None


def file_refusal(request: Any) -> str | None:
    """Why a request's file references must be refused (the first bad one), or None when all are uploads.

    A file reference is any object with a string ``path`` (Gradio's ``FileData``), at any depth.
    """
    from webapp.demo_files import RefusedFile, accepted_upload

    stack = [request]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("path"), str):
                try:
                    accepted_upload(item)
                except RefusedFile as e:
                    return str(e)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _is_json(scope) -> bool:
    """Whether FastAPI would read the body as JSON: no content type, ``application/json`` or ``*+json``.

    Uploads (multipart) are left to Gradio's size limit; they name no files.
    """
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            kind = value.split(b";")[0].strip().lower()
            return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))
    return True


async def _answer(send, status: int, message: str) -> None:
    """A JSON error like Gradio's own (``{"detail": ...}``), which its page shows as the message."""
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
