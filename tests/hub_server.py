"""A stand-in for the Hugging Face Hub, just big enough for kpcore's push and pull tests.

It implements the endpoints that ``huggingface_hub`` 2.x calls for ``create_repo``,
``upload_folder`` (legacy and ``hf_xet`` pipelined paths, with every file uploaded as a
"regular" base64 blob, never LFS/Xet), ``snapshot_download`` and ``hf_hub_download``:

    POST      /api/repos/create                        create a model repo (409 + url if it exists)
    POST      /api/validate-yaml                       README front matter check (always fine)
    POST      /api/models/{ns}/{name}/preupload/{rev}  upload mode of each file: "regular"
    POST      /api/models/{ns}/{name}/commit/{rev}     NDJSON commit, files base64-encoded
    GET       /api/models/{ns}/{name}[/revision/{rev}] model info: sha + siblings
    GET       /api/models/{ns}/{name}/tree/{rev}       flat, recursive file listing
    GET/HEAD  /{ns}/{name}/resolve/{rev}/{path}        file bytes, ETag, X-Repo-Commit

Files live in memory. Every request whose token is ``"bad"`` gets 401. Use it as a
context manager; it binds 127.0.0.1 on a free port and stops on exit::

    with HubServer() as hub:
        push(folder, "me/model", endpoint=hub.url)
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

BAD_TOKEN = "bad"
STARTUP_TIMEOUT_S = 10.0


def git_blob_sha(data: bytes) -> str:
    """The git object id of a file, which the Hub uses as a regular file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _error(status: int, message: str, code: str | None = None) -> JSONResponse:
    headers = {"X-Error-Code": code} if code else {}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class FakeHub:
    """In-memory repos: ``repos[repo_id]`` is a list of ``(commit sha, {path: bytes})``, oldest first."""

    def __init__(self) -> None:
        self.repos: dict[str, list[tuple[str, dict[str, bytes]]]] = {}
        self.requests: list[str] = []  # "METHOD path" of every request, for assertions
        self.base_url = ""

    def snapshot(self, repo_id: str, rev: str) -> tuple[str, dict[str, bytes]] | JSONResponse:
        if repo_id not in self.repos:
            return _error(404, f"Repository {repo_id} not found", "RepoNotFound")
        for sha, files in reversed(self.repos[repo_id]):
            if rev in ("main", sha):
                return sha, files
        return _error(404, f"Revision {rev} not found", "RevisionNotFound")

    # -- endpoints -------------------------------------------------------------------

    async def create_repo(self, request: Request) -> Response:
        body = await request.json()
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        url = f"{self.base_url}/{repo_id}"
        if repo_id in self.repos:
            return JSONResponse({"error": "You already created this model repo", "url": url}, 409)
        empty = hashlib.sha1(repo_id.encode()).hexdigest()
        self.repos[repo_id] = [(empty, {})]
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    async def validate_yaml(self, request: Request) -> Response:
        return JSONResponse({"errors": [], "warnings": []})

    async def preupload(self, request: Request) -> Response:
        body = await request.json()
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                 for f in body["files"]]
        return JSONResponse({"files": files})

    async def commit(self, request: Request) -> Response:
        repo_id = _repo_id(request)
        snap = self.snapshot(repo_id, request.path_params["rev"])
        if isinstance(snap, Response):
            return snap
        files = dict(snap[1])
        summary = ""
        for line in (await request.body()).splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value["summary"]
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            else:
                return _error(400, f"stand-in Hub does not support commit operation {key!r}")
        sha = hashlib.sha1(f"{repo_id}{summary}{time.time_ns()}".encode()).hexdigest()
        self.repos[repo_id].append((sha, files))
        url = f"{self.base_url}/{repo_id}/commit/{sha}"
        return JSONResponse({"commitUrl": url, "commitOid": sha, "pullRequestUrl": None})

    async def model_info(self, request: Request) -> Response:
        repo_id = _repo_id(request)
        snap = self.snapshot(repo_id, request.path_params.get("rev", "main"))
        if isinstance(snap, Response):
            return snap
        sha, files = snap
        siblings = [{"rfilename": path} for path in sorted(files)]
        return JSONResponse({"id": repo_id, "sha": sha, "siblings": siblings, "private": False})

    async def tree(self, request: Request) -> Response:
        snap = self.snapshot(_repo_id(request), request.path_params["rev"])
        if isinstance(snap, Response):
            return snap
        return JSONResponse([{"type": "file", "path": path, "size": len(data), "oid": git_blob_sha(data)}
                             for path, data in sorted(snap[1].items())])

    async def resolve(self, request: Request) -> Response:
        snap = self.snapshot(_repo_id(request), request.path_params["rev"])
        if isinstance(snap, Response):
            return snap
        sha, files = snap
        path = request.path_params["path"]
        if path not in files:
            return _error(404, f"Entry {path} not found", "EntryNotFound")
        data = files[path]
        headers = {"ETag": f'"{git_blob_sha(data)}"', "X-Repo-Commit": sha,
                   "Content-Length": str(len(data))}
        body = b"" if request.method == "HEAD" else data
        return Response(body, headers=headers, media_type="application/octet-stream")

    def app(self) -> Starlette:
        repo = "/{ns}/{name}"
        api = "/api/models" + repo
        routes = [
            Route("/api/repos/create", self.create_repo, methods=["POST"]),
            Route("/api/validate-yaml", self.validate_yaml, methods=["POST"]),
            Route(api + "/preupload/{rev}", self.preupload, methods=["POST"]),
            Route(api + "/commit/{rev}", self.commit, methods=["POST"]),
            Route(api, self.model_info),
            Route(api + "/revision/{rev}", self.model_info),
            Route(api + "/tree/{rev}", self.tree),
            Route(repo + "/resolve/{rev}/{path:path}", self.resolve, methods=["GET", "HEAD"]),
        ]
        async def check_token(request: Request, call_next) -> Response:
            self.requests.append(f"{request.method} {request.url.path}")
            if request.headers.get("authorization") == f"Bearer {BAD_TOKEN}":
                return _error(401, "Invalid credentials in Authorization header")
            return await call_next(request)

        return Starlette(routes=routes,
                         middleware=[Middleware(BaseHTTPMiddleware, dispatch=check_token)])


def _repo_id(request: Request) -> str:
    return f"{request.path_params['ns']}/{request.path_params['name']}"


class HubServer:
    """Runs a :class:`FakeHub` with uvicorn in a daemon thread on 127.0.0.1 (free port)."""

    def __init__(self) -> None:
        self.hub = FakeHub()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.hub.base_url = self.url
        config = uvicorn.Config(self.hub.app(), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("stand-in Hub server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=STARTUP_TIMEOUT_S)
        self._sock.close()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 (free port) and never answers: a hung Hub or proxy.

    Connections are held open, unread, until the context exits::

        with SilentServer() as silent:
            push(folder, "me/model", endpoint=silent.url, timeout=1)   # must give up, not hang
    """

    POLL_S = 0.05

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen()
        self._sock.settimeout(self.POLL_S)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections.append(conn)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=STARTUP_TIMEOUT_S)
        for conn in self.connections:
            conn.close()
        self._sock.close()
