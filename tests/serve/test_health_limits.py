"""Serving when things go wrong: /health and /predict answer 503 once the micro-batching task
is dead (no request hangs), and upload bytes held at once across requests are capped."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from foveal.config import ServeConfig
from foveal.serve.app import create_app
from foveal.serve.batcher import BatcherStopped, MicroBatcher

MIB = 1024 * 1024


@contextmanager
def _serving(app: Any) -> Iterator[httpx.Client]:
    """`app` under uvicorn in a background thread, and a client with a timeout: a request that
    hangs fails the test instead of hanging it (TestClient would wait for it forever)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started, "uvicorn to start", 30)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(10)


def _wait_for(cond: Callable[[], bool], what: str, seconds: float = 10) -> None:
    deadline = time.time() + seconds
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _post_png(client: httpx.Client, png: Path) -> httpx.Response:
    return client.post("/predict", files={"file": (png.name, png.read_bytes(), "image/png")})


def _cancel(task: asyncio.Task) -> None:
    task.get_loop().call_soon_threadsafe(task.cancel)  # the task lives on the server's loop thread


def _app(tiny_run: Path, **settings: Any) -> Any:
    return create_app(tiny_run, ServeConfig(backend="onnx", max_wait_ms=2, **settings))


# --- a dead batcher -------------------------------------------------------------------------


def test_health_and_predict_503_when_batcher_cancelled(tiny_run: Path, digit_pngs: list[Path]):
    app = _app(tiny_run)
    with _serving(app) as client:
        assert client.get("/health").status_code == 200
        assert _post_png(client, digit_pngs[0]).status_code == 200
        _cancel(app.state.batcher._task)
        _wait_for(lambda: client.get("/health").status_code == 503, "/health to report 503")
        body = client.get("/health").json()
        assert body["status"] == "error" and "micro-batching task was cancelled" in body["error"]
        r = _post_png(client, digit_pngs[0])
        assert r.status_code == 503 and "micro-batching task was cancelled" in r.json()["error"]


def test_health_503_names_the_crash(tiny_run: Path, digit_pngs: list[Path]):
    app = _app(tiny_run)

    async def broken_collect():
        raise RuntimeError("collector bug")

    app.state.batcher._collect = broken_collect  # the collector task dies on its first step
    with _serving(app) as client:
        _wait_for(lambda: client.get("/health").status_code == 503, "/health to report 503")
        assert "crashed: RuntimeError: collector bug" in client.get("/health").json()["error"]
        r = _post_png(client, digit_pngs[0])
        assert r.status_code == 503 and "collector bug" in r.json()["error"]


def test_crashed_batcher_refuses_submits_and_stops_cleanly():
    async def main() -> None:
        b = MicroBatcher(lambda x: x, max_batch=2, max_wait_ms=1)

        async def broken_collect():
            raise RuntimeError("collector bug")

        b._collect = broken_collect
        assert b.failure() == "the micro-batching task was not started"
        b.start()
        await asyncio.sleep(0.01)
        assert b.failure() == "the micro-batching task crashed: RuntimeError: collector bug"
        with pytest.raises(BatcherStopped, match="collector bug"):
            await asyncio.wait_for(b.submit(np.zeros((1, 1, 2, 2), np.uint8)), 5)
        await b.stop()  # the app's shutdown: the crash was already reported, so no second raise

    asyncio.run(main())


def test_requests_waiting_when_batcher_dies_get_503(tiny_run: Path, digit_pngs: list[Path]):
    """One request inside the model call, one queued behind it: both answered, neither hangs."""
    app = _app(tiny_run)
    batcher = app.state.batcher
    started, release = threading.Event(), threading.Event()

    def blocking_infer(x: np.ndarray) -> np.ndarray:
        started.set()
        release.wait(30)
        return np.zeros((len(x), 10), np.float32)

    batcher.infer = blocking_infer
    answers: dict[str, Any] = {}
    try:
        with _serving(app) as client:
            def send(key: str) -> threading.Thread:
                def post() -> None:
                    try:
                        answers[key] = _post_png(client, digit_pngs[0])
                    except httpx.TimeoutException as e:
                        answers[key] = e
                t = threading.Thread(target=post, daemon=True)
                t.start()
                return t

            first = send("in_model")
            assert started.wait(10), "the first request never reached the model"
            second = send("queued")
            _wait_for(lambda: batcher.pending == 1, "the second request to queue")
            _cancel(batcher._task)
            for t in (first, second):
                t.join(15)
    finally:
        release.set()
    for key in ("in_model", "queued"):
        r = answers.get(key)
        assert isinstance(r, httpx.Response), f"request {key} got no answer ({r!r}): it hangs on the dead batcher"
        assert r.status_code == 503 and "micro-batching task was cancelled" in r.json()["error"], (key, r.text)


# --- bytes of uploads held at once ----------------------------------------------------------


def test_budget_below_upload_cap_is_refused_with_both_settings_named(tiny_run: Path):
    with pytest.raises(ValueError, match=r"max_uploads_in_flight_mb \(10\) is below max_upload_mb \(20"):
        create_app(tiny_run, ServeConfig(max_upload_mb=20, max_uploads_in_flight_mb=10))


def test_default_budget_lives_in_settings_and_cli_can_set_it(monkeypatch):
    from foveal.cli import deploy
    from foveal.cli.main import build_parser

    seen: list[ServeConfig] = []
    monkeypatch.setattr("foveal.serve.app.run_server", lambda model, s, **kw: seen.append(s))
    for extra, expected in (([], ServeConfig().max_uploads_in_flight_mb), (["--max-uploads-in-flight-mb", "64"], 64)):
        args = build_parser().parse_args(["serve", "m.onnx", *extra])
        assert deploy._cmd_serve(args) == 0
        assert seen[-1].max_uploads_in_flight_mb == expected
    assert ServeConfig().max_uploads_in_flight_mb == 256


@pytest.fixture(scope="module")
def budget_server(tiny_run: Path) -> Iterator[int]:
    """The port of a server with a 1 MiB upload cap and a 1 MiB budget of upload bytes held at once."""
    with _serving(_app(tiny_run, max_upload_mb=1, max_uploads_in_flight_mb=1)) as client:
        yield client.base_url.port


def _multipart(name: str) -> tuple[bytes, bytes]:
    """(part header, part trailer) of a one-file multipart body with boundary 'b'."""
    head = f'--b\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n\r\n'.encode()
    return head, b"\r\n--b--\r\n"


def _open(port: int, headers: dict[str, str]) -> socket.socket:
    """A raw connection that has sent a /predict request head and nothing of the body yet."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = ["POST /predict HTTP/1.1", "Host: 127.0.0.1", "Content-Type: multipart/form-data; boundary=b",
             *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {buf!r}"
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    fields = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:])
    length = int(next(v for k, v in fields.items() if k.lower() == b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body[:length])


def _noise_png(side: int = 480) -> bytes:
    """A real PNG of about 0.7 MB: random pixels do not compress."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _held(port: int) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/health").json()["upload_bytes_in_flight"]


def test_upload_bytes_in_flight_are_capped(budget_server: int, digit_pngs: list[Path]):
    port, big = budget_server, _noise_png()
    head, tail = _multipart("big.png")
    size = len(head) + len(big) + len(tail)
    assert 0.5 * MIB < size < MIB  # under the per-upload cap; two of them pass the 1 MiB budget
    slow = _open(port, {"Content-Length": str(size)})  # a slow client: head + a little of the body
    slow.sendall(head + big[:1000])
    try:
        _wait_for(lambda: _held(port) == size, "the slow upload's bytes to be reserved")
        second = _open(port, {"Content-Length": str(size)})  # refused from its Content-Length, unread
        with second:
            status, body = _read_response(second)
        assert status == 503, body
        assert "server busy" in body["error"] and "max_uploads_in_flight_mb" in body["error"]
        r = httpx.post(f"http://127.0.0.1:{port}/predict", files={"file": ("d.png", digit_pngs[0].read_bytes())},
                       timeout=30)
        assert r.status_code == 200, r.text  # a small upload still fits beside the slow one
        # the refused and the finished requests give their bytes back (the latter just after answering)
        _wait_for(lambda: _held(port) == size, "only the slow upload's bytes to be held")
    finally:
        slow.close()
    _wait_for(lambda: _held(port) == 0, "the closed upload's bytes to be released")
    r = httpx.post(f"http://127.0.0.1:{port}/predict", files={"file": ("big.png", big, "image/png")}, timeout=30)
    assert r.status_code == 200, r.text  # the same upload is taken once the budget is free


def test_streamed_upload_is_counted_chunk_by_chunk(budget_server: int):
    """Without Content-Length nothing is reserved up front: the budget is taken as chunks arrive."""
    port = budget_server
    slow = _open(port, {"Content-Length": str(700_000)})
    slow.sendall(b"--b\r\n")
    try:
        _wait_for(lambda: _held(port) == 700_000, "the slow upload's bytes to be reserved")
        streamed = _open(port, {"Transfer-Encoding": "chunked"})
        with streamed:
            head, _ = _multipart("stream.png")
            left = MIB - 700_000 + 1  # one byte past the budget; all of it read, so no reset on close
            for chunk in (head + b"\0" * (100_000 - len(head)), b"\0" * 100_000, b"\0" * (left - 200_000)):
                streamed.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            status, body = _read_response(streamed)
        assert status == 503 and "server busy" in body["error"], body
        _wait_for(lambda: _held(port) == 700_000, "the refused stream to give its bytes back")
    finally:
        slow.close()
    _wait_for(lambda: _held(port) == 0, "the closed upload's bytes to be released")
