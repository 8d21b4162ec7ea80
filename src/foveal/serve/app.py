"""HTTP API and web page (FastAPI): POST /predict, GET /health, /metadata, /metrics and /.

Limits, each answered with a JSON 4xx/5xx `{"error": ...}` while the server keeps serving:
upload size (413, refused from Content-Length before reading, or when a streamed body passes
the cap), pixel count (400, the decoder's decompression-bomb guard), undecodable files (400),
more files in one request than max_files (400), missing file field (422), too many requests in
flight (503: a request counts from its headers until it is answered, its upload included), too many
upload bytes held at once across requests (503), and a dead micro-batching task (503 from /predict
and /health alike).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException

from ..config import ServeConfig
from ..backends import load_predictor
from ..predictor import ImagePredictor, topk_records
from .batcher import BatcherStopped, MicroBatcher
from .page import PAGE_HTML

MIB = 1024 * 1024


class BodyRefused(Exception):
    """A request body refused while streaming in; `status` is the HTTP answer."""

    status = 413


class BodyTooLarge(BodyRefused):
    """The request body passed the upload cap while streaming in."""


class UploadsBusy(BodyRefused):
    """Taking this body would pass the budget of upload bytes held at once."""

    status = 503


class UploadBudget:
    """Bytes of request bodies held at once, all requests together, capped at `limit`.

    With ServeConfig's default limits, max_in_flight requests x the upload cap could hold ~10 GB
    before any decoding; this bounds the sum. Touched only on the event loop, with no await between
    check and add, so a plain counter needs no lock.
    """

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def take(self, n: int) -> None:
        if self.held + n > self.limit:
            raise UploadsBusy(f"server busy: uploads in flight hold {self.held:,} bytes and this one needs "
                              f"{n:,} more, over the limit of {self.limit:,} bytes (max_uploads_in_flight_mb); "
                              "retry later")
        self.held += n

    def give(self, n: int) -> None:
        self.held -= n


class BodyLimit:
    """ASGI middleware: refuse bodies over the upload cap (413) or the shared budget (503).

    From Content-Length before reading anything (its bytes are reserved up front), else while
    reading: chunks are counted as they arrive and BodyRefused is raised. Starlette parses
    multipart into temp files without a total cap, so the caps sit here, on the raw byte
    stream: a 50 MB upload is refused after at most `max_bytes` have been read.
    """

    def __init__(self, app: Any, max_bytes: int, budget: UploadBudget):
        self.app, self.max_bytes, self.budget = app, max_bytes, budget

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        declared = int(declared) if declared is not None and declared.isdigit() else 0
        if declared > self.max_bytes:
            resp = _error(413, f"upload of {declared:,} bytes is over the limit of {self.max_bytes:,} bytes")
            return await resp(scope, receive, send)
        try:
            self.budget.take(declared)
        except UploadsBusy as e:
            return await _error(503, str(e))(scope, receive, send)
        seen, reserved = 0, declared

        async def limited() -> dict:
            nonlocal seen, reserved
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(f"upload is over the limit of {self.max_bytes:,} bytes")
            if seen > reserved:  # no Content-Length (chunked), or more than declared: take as it comes
                self.budget.take(seen - reserved)
                reserved = seen
            return msg

        try:
            await self.app(scope, limited, send)
        finally:  # the app has answered and dropped the form: its bytes are no longer held
            self.budget.give(reserved)


class Metrics:
    """A few Prometheus counters, written out by hand (text format 0.0.4) to avoid a dependency."""

    def __init__(self) -> None:
        self.responses: dict[int, int] = {}
        self.images = 0
        self.latency_sum = 0.0

    def observe(self, status: int, seconds: float, images: int = 0) -> None:
        self.responses[status] = self.responses.get(status, 0) + 1
        self.latency_sum += seconds
        self.images += images

    def text(self, batcher: MicroBatcher) -> str:
        lines = ["# TYPE foveal_responses_total counter"]
        lines += [f'foveal_responses_total{{code="{c}"}} {n}' for c, n in sorted(self.responses.items())]
        lines += ["# TYPE foveal_images_total counter", f"foveal_images_total {self.images}",
                  "# TYPE foveal_request_seconds_sum counter", f"foveal_request_seconds_sum {self.latency_sum:.6f}",
                  "# TYPE foveal_batches_total counter", f"foveal_batches_total {batcher.batches}",
                  "# TYPE foveal_batched_images_total counter", f"foveal_batched_images_total {batcher.images}",
                  "# TYPE foveal_queue_length gauge", f"foveal_queue_length {batcher.pending}"]
        return "\n".join(lines) + "\n"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _decode_upload(backend: ImagePredictor, upload: Any, max_pixels: int) -> np.ndarray:
    """Spool one UploadFile to a named temp file and decode it with the shared decoder.

    The decoder takes paths (it stats, opens and guards pixel counts), so the bytes go to disk
    once; the error message names the uploaded filename, never the temp path.
    """
    from ..data.decode import DecodeError

    name = upload.filename or "upload"
    fd, tmp = tempfile.mkstemp(prefix="foveal-upload-", suffix=Path(name).suffix[:16])
    try:
        with os.fdopen(fd, "wb") as f:
            upload.file.seek(0)
            while chunk := upload.file.read(1 << 20):
                f.write(chunk)
        return backend.read(tmp, max_pixels)
    except DecodeError as e:
        raise HTTPException(400, str(e).replace(f"'{tmp}'", f"'{name}'")) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _upload_budget(s: ServeConfig) -> UploadBudget:
    """The shared budget of upload bytes; refuses settings under which a body the upload cap
    allows could never fit, since such a request would get 'retry later' forever."""
    if s.max_uploads_in_flight_mb < s.max_upload_mb:
        raise ValueError(f"max_uploads_in_flight_mb ({s.max_uploads_in_flight_mb}) is below max_upload_mb "
                         f"({s.max_upload_mb}): one allowed upload could never be taken; raise it to at least "
                         f"{s.max_upload_mb}")
    return UploadBudget(int(s.max_uploads_in_flight_mb * MIB))


def create_app(model: str | Path | ImagePredictor, settings: Optional[ServeConfig] = None) -> FastAPI:
    """The FastAPI app serving `model` (run folder, weights, .onnx, or a loaded ImagePredictor) on the CPU."""
    s = settings or ServeConfig()
    budget = _upload_budget(s)  # before loading: a settings mistake should cost nothing
    backend = model if isinstance(model, ImagePredictor) else load_predictor(model, s.backend, "cpu", s.threads)
    batcher = MicroBatcher(backend.predict_images, s.max_batch, s.max_wait_ms)
    metrics = Metrics()
    in_flight = 0

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="foveal", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=int(s.max_upload_mb * MIB), budget=budget)
    app.state.backend, app.state.batcher, app.state.settings = backend, batcher, s
    app.state.upload_budget = budget

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        return _error(422, f"invalid request: {e.errors()}")

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE_HTML

    @app.get("/health")
    async def health() -> JSONResponse:
        state = {"model": backend.card.model, "backend": backend.name, "queue": batcher.pending,
                 "in_flight": in_flight, "upload_bytes_in_flight": budget.held}
        reason = batcher.failure()
        if reason is not None:  # the process is up but cannot answer /predict: a load balancer must know
            return JSONResponse({"status": "error", "error": reason, **state}, status_code=503)
        return JSONResponse({"status": "ok", **state})

    @app.get("/metadata")
    async def metadata() -> dict[str, Any]:
        return {**backend.public_meta(), "settings": asdict(s)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prom() -> str:
        return metrics.text(batcher)

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        nonlocal in_flight
        t0 = time.perf_counter()
        dead = batcher.failure()
        if dead is not None:
            resp = _error(503, f"cannot serve: {dead}; restart the server")
        elif in_flight >= s.max_in_flight:
            resp = _error(503, f"server busy: {in_flight} requests in flight (limit {s.max_in_flight}); retry later")
        else:
            in_flight += 1
            try:
                resp = await _predict(request)
            except HTTPException as e:
                resp = _error(e.status_code, str(e.detail))
            except BatcherStopped as e:  # the collector died while this request waited
                resp = _error(503, f"cannot serve: {e}; restart the server")
            except Exception as e:  # a model failure answers 500 for this request; the server goes on
                resp = _error(500, f"inference failed: {type(e).__name__}: {e}")
            finally:
                in_flight -= 1
        metrics.observe(resp.status_code, time.perf_counter() - t0, getattr(resp, "n_images", 0))
        return resp

    async def _predict(request: Request) -> JSONResponse:
        try:
            form = await request.form(max_files=s.max_files)
        except BodyRefused as e:
            raise HTTPException(e.status, str(e)) from None
        except Exception as e:  # malformed multipart / wrong content type / past max_files
            if "too many files" in str(e).lower():  # starlette's words, as HTTPException or MultiPartException
                raise HTTPException(400, f"too many files in one request: at most {s.max_files} images per "
                                    "request (max_files); send the others in further requests") from None
            raise HTTPException(400, f"could not read a multipart form ({type(e).__name__}: {e}); "
                                "send the image as multipart/form-data field 'file'") from None
        uploads = [v for k in ("file", "files") for v in form.getlist(k) if hasattr(v, "filename")]
        if not uploads:
            raise HTTPException(422, "missing form field 'file': send the image as multipart/form-data "
                                f"(got fields: {', '.join(form.keys()) or 'none'})")
        images = [await asyncio.to_thread(_decode_upload, backend, u, s.max_pixels) for u in uploads]
        probs = await batcher.submit(np.stack(images))
        records = topk_records(probs, backend.classes, s.topk)
        results = [{"filename": u.filename, **r} for u, r in zip(uploads, records)]
        resp = JSONResponse({"model": backend.card.model, "backend": backend.name, "results": results})
        resp.n_images = len(results)  # type: ignore[attr-defined]
        return resp

    return app


def run_server(model: str | Path, settings: ServeConfig) -> None:
    """Load `model` and serve it with uvicorn on settings.host:settings.port until interrupted."""
    import uvicorn

    app = create_app(model, settings)
    print(f"serving {model} ({app.state.backend.name}, max batch {settings.max_batch}, "
          f"max wait {settings.max_wait_ms} ms) on http://{settings.host}:{settings.port}/", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
