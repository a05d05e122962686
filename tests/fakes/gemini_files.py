"""The fake Gemini's Files API, as google-genai calls it (checked against google-genai 3.x,
``files.py`` and ``_api_client.py``), and its checks of the files a request names.

- ``POST /upload/{version}/files`` with ``X-Goog-Upload-Protocol: resumable`` and
  ``X-Goog-Upload-Command: start`` (``X-Goog-Upload-Header-Content-Length`` and
  ``-Content-Type``, JSON body ``{"file": {"mimeType", "displayName", "sizeBytes"}}``) opens an
  upload session: an empty 200 with ``X-Goog-Upload-URL`` and ``X-Goog-Upload-Status: active``.
- ``POST`` to that URL, one request per chunk (the SDK sends 8 MiB chunks) with
  ``X-Goog-Upload-Command: upload`` and ``X-Goog-Upload-Offset``; the last one says
  ``upload, finalize`` and gets ``X-Goog-Upload-Status: final`` and ``{"file": File}``.
  A wrong offset or a size that does not add up is a 400.
- ``GET /{version}/files/{id}``: the File (``state`` ``PROCESSING`` for the first
  :attr:`FakeFiles.processing_gets` looks at a video, then ``ACTIVE``, or ``FAILED`` with
  ``error`` for a file named in :attr:`FakeFiles.fail`); ``DELETE`` the same path: ``{}``.
  A file that expired (:meth:`FakeFiles.expire`, or past its ``expirationTime``) or was
  deleted is gone: 403 PERMISSION_DENIED, as Google answers.
- A generation request naming a file (``fileData.fileUri``) that is gone is refused with that
  403, one not ``ACTIVE`` with a 400; an inline PDF or audio part whose bytes are not a PDF or a
  known audio format is refused with the 400 Gemini gives for a file it cannot decode.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.gemini import FakeGemini, RecordedRequest, Reply

_UPLOAD_RE = re.compile(r"/upload/(?P<version>v1[a-z0-9]*)/files")
_FILE_RE = re.compile(r"/(?P<version>v1[a-z0-9]*)/files/(?P<id>[a-z0-9-]+)")
LIFETIME = 48 * 3600.0
AUDIO_MAGIC = (b"ID3", b"RIFF", b"OggS", b"fLaC", b"FORM", b"\xff")


def rfc3339(at: float) -> str:
    """A Unix time as Google writes it (``2026-11-27T19:00:00.123456Z``)."""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def decodable(mime_type: str, data: bytes) -> bool:
    """Whether Gemini could decode these bytes as the PDF or audio they claim to be."""
    if mime_type == "application/pdf":  # a header, and the end-of-file marker of a whole one
        return data.startswith(b"%PDF-") and b"%%EOF" in data[-1024:]
    if mime_type.startswith("audio/"):
        return data.startswith(AUDIO_MAGIC) or data[4:8] == b"ftyp"
    return True


@dataclass
class FakeFile:
    """One uploaded file."""

    id: str
    display_name: str
    mime_type: str
    data: bytes = field(repr=False)
    created_at: float
    expires_at: float
    uri: str
    processing_left: int
    failed: bool = False
    deleted: bool = False

    @property
    def name(self) -> str:
        """``files/{id}``, as files.get and files.delete take it."""
        return f"files/{self.id}"

    @property
    def state(self) -> str:
        """PROCESSING, ACTIVE or FAILED."""
        if self.processing_left > 0:
            return "PROCESSING"
        return "FAILED" if self.failed else "ACTIVE"

    def resource(self) -> dict[str, Any]:
        """The File object of the REST API."""
        body: dict[str, Any] = {
            "name": self.name,
            "displayName": self.display_name,
            "mimeType": self.mime_type,
            "sizeBytes": str(len(self.data)),
            "createTime": rfc3339(self.created_at),
            "updateTime": rfc3339(self.created_at),
            "expirationTime": rfc3339(self.expires_at),
            "sha256Hash": base64.b64encode(hashlib.sha256(self.data).hexdigest().encode()).decode(),
            "uri": self.uri,
            "state": self.state,
            "source": "UPLOADED",
        }
        if self.state == "FAILED":
            body["error"] = {"code": 400, "message": "The file could not be processed."}
        return body


@dataclass
class _Session:
    meta: dict[str, Any]
    size: int
    mime_type: str
    received: bytearray = field(default_factory=bytearray)


class FakeFiles:
    """The Files API of a :class:`~tests.fakes.gemini.FakeGemini` (its ``files``)."""

    def __init__(self, gemini: FakeGemini) -> None:
        self._gemini = gemini
        self.files: dict[str, FakeFile] = {}
        """Every file ever uploaded, by id (deleted and expired ones are marked, not removed)."""
        self.calls: list[tuple[str, str]] = []
        """(what, file id or upload id) in order: start, chunk, finalize, get, delete, and
        abandoned (the client went away during an upload)."""
        self.processing_gets = 2
        """How many files.get a video stays PROCESSING before it is ACTIVE."""
        self.fail: set[str] = set()
        """Display names whose processing ends FAILED."""
        self.lifetime = LIFETIME
        self.gate = asyncio.Event()
        """Chunks wait until it is set (it is, unless a test clears it to hold uploads)."""
        self.gate.set()
        self.held = 0
        """Chunks waiting at the gate now."""
        self.most_open = 0
        """The most upload sessions open at once."""
        self._sessions: dict[str, _Session] = {}
        self._ids = itertools.count(1)

    # --- for tests ------------------------------------------------------------------------

    def uploads(self, *, live: bool | None = None) -> list[FakeFile]:
        """Uploaded files in order (``live``: only those still held, or only those gone)."""
        out = list(self.files.values())
        if live is not None:
            out = [f for f in out if self._alive(f) == live]
        return out

    def expire(self, name_or_id: str) -> None:
        """Make a file expire now (Gemini drops it 48 h after the upload)."""
        self.files[name_or_id.removeprefix("files/")].expires_at = time.time() - 1

    def by_uri(self, uri: str) -> FakeFile | None:
        """The file a ``fileData.fileUri`` names."""
        return next((f for f in self.files.values() if f.uri == uri), None)

    # --- serving ----------------------------------------------------------------------------

    def handles(self, request: web.Request) -> bool:
        """Whether the request is for the Files API."""
        return bool(
            _UPLOAD_RE.fullmatch(request.path)
            or (request.method in ("GET", "DELETE") and _FILE_RE.fullmatch(request.path))
        )

    async def serve(self, request: web.Request) -> web.Response:
        """Answer one Files API request."""
        if _UPLOAD_RE.fullmatch(request.path):
            if "upload_id" in request.query:
                return await self._chunk(request)
            return await self._start(request)
        match = _FILE_RE.fullmatch(request.path)
        assert match is not None
        file_id = match["id"]
        found = self.files.get(file_id)
        self.calls.append(("get" if request.method == "GET" else "delete", file_id))
        if found is None or not self._alive(found):
            return _error(
                403,
                f"You do not have permission to access the File {file_id} or it may not exist.",
            )
        if request.method == "DELETE":
            found.deleted = True
            return _json({})
        if found.processing_left > 0:
            found.processing_left -= 1
            return _json({**found.resource(), "state": "PROCESSING"})
        return _json(found.resource())

    async def _start(self, request: web.Request) -> web.Response:
        headers = request.headers
        if headers.get("X-Goog-Upload-Protocol") != "resumable" or (
            headers.get("X-Goog-Upload-Command") != "start"
        ):
            return _error(400, "Upload requests must use the resumable protocol.")
        try:
            size = int(headers["X-Goog-Upload-Header-Content-Length"])
            body = json.loads(await request.read() or b"{}")
        except (KeyError, ValueError):
            return _error(400, "Invalid upload start request.")
        meta = body.get("file") or {}
        # google-genai writes the File's fields in snake_case here (display_name, mime_type)
        mime = headers.get("X-Goog-Upload-Header-Content-Type") or _field(meta, "mimeType") or ""
        upload_id = f"up-{next(self._ids)}"
        self._sessions[upload_id] = _Session(meta, size, mime)
        self.most_open = max(self.most_open, len(self._sessions))
        self.calls.append(("start", upload_id))
        url = (
            f"{self._gemini.base_url}{request.path}?upload_id={upload_id}&upload_protocol=resumable"
        )
        return web.Response(
            status=200,
            headers={
                "X-Goog-Upload-URL": url,
                "X-Goog-Upload-Status": "active",
                "X-Goog-Upload-Chunk-Granularity": "8388608",
                "Content-Type": "text/plain; charset=utf-8",
            },
        )

    async def _chunk(self, request: web.Request) -> web.Response:
        upload_id = request.query["upload_id"]
        session = self._sessions.get(upload_id)
        if session is None:
            return _error(404, "No such upload session.")
        command = [c.strip() for c in request.headers.get("X-Goog-Upload-Command", "").split(",")]
        data = await request.read()
        self.held += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:  # the client went away: the session is abandoned
            self._sessions.pop(upload_id, None)
            self.calls.append(("abandoned", upload_id))
            raise
        finally:
            self.held -= 1
        if int(request.headers.get("X-Goog-Upload-Offset", "-1")) != len(session.received):
            return _error(400, "The upload offset does not match the bytes received.")
        session.received += data
        if "finalize" not in command:
            self.calls.append(("chunk", upload_id))
            return web.Response(status=200, headers={"X-Goog-Upload-Status": "active"})
        del self._sessions[upload_id]
        if len(session.received) != session.size:
            return _error(400, "The uploaded size does not match the declared size.")
        file_id = hashlib.sha256(f"{upload_id}{time.time()}".encode()).hexdigest()[:12]
        now = time.time()
        display = str(_field(session.meta, "displayName") or "")
        video = session.mime_type.startswith("video/")
        file = FakeFile(
            id=file_id,
            display_name=display,
            mime_type=session.mime_type,
            data=bytes(session.received),
            created_at=now,
            expires_at=now + self.lifetime,
            uri=f"{self._gemini.base_url}/v1beta/files/{file_id}",
            processing_left=self.processing_gets if video else 0,
            failed=display in self.fail,
        )
        self.files[file_id] = file
        self.calls.append(("finalize", file_id))
        return web.Response(
            status=200,
            body=json.dumps({"file": file.resource()}).encode(),
            headers={"X-Goog-Upload-Status": "final", "Content-Type": "application/json"},
        )

    def _alive(self, file: FakeFile) -> bool:
        return not file.deleted and file.expires_at > time.time()

    # --- what a generation request names ------------------------------------------------------

    def refusal(self, rec: RecordedRequest) -> Reply | None:
        """Gemini's error for a request naming a gone or unready file, or carrying an inline
        PDF or audio it cannot decode (None: the files are fine)."""
        from tests.fakes.gemini import Reply, _get, decode_base64

        for content in rec.contents():
            for part in content.get("parts") or []:
                file_data = _get(part, "fileData", "file_data")
                if isinstance(file_data, dict):
                    uri = _get(file_data, "fileUri", "file_uri", "")
                    found = self.by_uri(uri)
                    if found is None or not self._alive(found):
                        file_id = uri.rsplit("/", 1)[-1]
                        return Reply.error(
                            403,
                            f"You do not have permission to access the File {file_id} or it "
                            "may not exist.",
                        )
                    if found.state != "ACTIVE":
                        return Reply.error(
                            400,
                            f"The File {found.id} is not in an ACTIVE state and usage is not "
                            "allowed.",
                        )
                inline = _get(part, "inlineData", "inline_data")
                if isinstance(inline, dict):
                    mime = _get(inline, "mimeType", "mime_type", "")
                    if not decodable(mime, decode_base64(inline.get("data", ""))):
                        what = "document" if mime == "application/pdf" else "audio"
                        return Reply.error(400, f"Unable to process input {what} ({mime}).")
        return None


@dataclass(frozen=True)
class FilePart:
    """A ``fileData`` part of a request."""

    uri: str
    mime_type: str
    role: str | None


def file_parts(rec: RecordedRequest, role: str | None = None) -> list[FilePart]:
    """Every ``fileData`` part of a request, in order (optionally of one role)."""
    from tests.fakes.gemini import _get

    out: list[FilePart] = []
    for content in rec.contents():
        if role is not None and content.get("role") != role:
            continue
        for part in content.get("parts") or []:
            file_data = _get(part, "fileData", "file_data")
            if isinstance(file_data, dict):
                out.append(
                    FilePart(
                        _get(file_data, "fileUri", "file_uri", ""),
                        _get(file_data, "mimeType", "mime_type", ""),
                        content.get("role"),
                    )
                )
    return out


def _field(meta: dict[str, Any], camel: str) -> Any:
    """A File field in either spelling (the REST docs write camelCase, the SDK snake_case)."""
    snake = re.sub(r"([A-Z])", lambda m: "_" + m[1].lower(), camel)
    return meta.get(camel, meta.get(snake))


def _json(body: Any) -> web.Response:
    return web.Response(
        status=200,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )


def _error(code: int, message: str) -> web.Response:
    from tests.fakes.gemini import _STATUS_NAMES

    body = {"error": {"code": code, "message": message, "status": _STATUS_NAMES.get(code, "")}}
    return web.Response(
        status=code,
        body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )
