"""`foveal serve` for real: the command started as a user starts it, in its own process on a free
127.0.0.1 port, answering real HTTP requests; every answer is checked against `foveal predict`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import digits_arrays
from tests.serve.conftest import free_port

MAX_FILES, MAX_IN_FLIGHT = 3, 2


def _wait_for(cond: Callable[[], bool], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.05)


def _launch(run: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`foveal serve RUN` on a free port, started but not yet waited for; (process, base URL)."""
    port = free_port()
    cmd = [sys.executable, "-m", "foveal.cli.main", "serve", str(run), "--host", "127.0.0.1", "--port", str(port),
           "--max-files", str(MAX_FILES), "--max-in-flight", str(MAX_IN_FLIGHT), "--max-wait-ms", "2", "--threads", "1"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, f"http://127.0.0.1:{port}"


def _healthy(proc: subprocess.Popen, url: str, log: Path) -> bool:
    """Waits (at most 120 s) for /health to answer 200; False if the server exited because its port
    was taken meanwhile (free_port's port is free when picked, not reserved)."""
    def up() -> bool:
        if proc.poll() is not None:
            return True  # exited: stop waiting
        try:
            return httpx.get(f"{url}/health", timeout=2, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    try:
        _wait_for(up, "`foveal serve` to answer /health", 120)
    except AssertionError:
        _stop(proc)
        raise AssertionError(f"`foveal serve` did not answer in 120 s:\n{log.read_text()}") from None
    if proc.poll() is None:
        return True
    assert "address already in use" in log.read_text().lower(), f"`foveal serve` exited:\n{log.read_text()}"
    return False


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server(tiny_run: Path, request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    """A client of `foveal serve` on the tiny run, with max_files 3 and max_in_flight 2."""
    log = request.getfixturevalue("tmp_path_factory").mktemp("serve_log") / "serve.log"
    proc, url = _launch(tiny_run, log)
    try:
        request.getfixturevalue("digits")  # `foveal predict` runs here while the server starts
        tries = 1
        while not _healthy(proc, url, log):
            assert tries < 3, "three free ports were taken before `foveal serve` could bind"
            proc, url = _launch(tiny_run, log)
            tries += 1
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
            yield client
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def digits(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[Path, dict]:
    """Ten digit PNGs (one per digit, varied sizes) and what `foveal predict --json` says of each."""
    from foveal.cli.main import main

    root = tmp_path_factory.mktemp("real_server_digits")
    x, y = digits_arrays()
    paths = []
    for d in range(10):
        i = int(np.flatnonzero(y == d)[0])
        paths.append(root / f"digit{d}.png")
        Image.fromarray(x[i]).resize((20 + 3 * d, 20 + 3 * d)).save(paths[-1])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["predict", str(tiny_run), *map(str, paths), "--json", "--topk", "5", "--device", "cpu"]) == 0
    records = json.loads(out.getvalue())
    assert [Path(r["path"]).name for r in records] == [p.name for p in paths]
    return dict(zip(paths, records))


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]


def _assert_row_is(row: dict, ref: dict) -> None:
    """One result row of the server against `foveal predict`'s record of the same file."""
    assert row["filename"] == Path(ref["path"]).name
    assert row["class"] == ref["class"], (row, ref)
    assert [t["class"] for t in row["top"]] == [t["class"] for t in ref["top"]], (row, ref)
    np.testing.assert_allclose([t["prob"] for t in row["top"]], [t["prob"] for t in ref["top"]], atol=1e-5)


def test_single_image_matches_predict(server: httpx.Client, digits: dict[Path, dict]):
    path, ref = next(iter(digits.items()))
    r = server.post("/predict", files=_files([path]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["backend"] == "torch" and body["model"] == "lenet5" and len(body["results"]) == 1
    _assert_row_is(body["results"][0], ref)
    probs = [t["prob"] for t in body["results"][0]["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)


def test_rows_of_a_multi_image_request_stay_with_their_images(server: httpx.Client, digits: dict[Path, dict]):
    """Images the model puts in different classes, so a row answered for the wrong image shows."""
    chosen: dict[str, Path] = {}
    for path, ref in digits.items():
        chosen.setdefault(ref["class"], path)
    assert len(chosen) >= MAX_FILES, f"the tiny model gives too few distinct classes: {sorted(chosen)}"
    paths = list(chosen.values())[:MAX_FILES][::-1]  # not in the order `foveal predict` read them
    r = server.post("/predict", files=_files(paths))
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    assert [row["filename"] for row in rows] == [p.name for p in paths]
    for row, path in zip(rows, paths):
        _assert_row_is(row, digits[path])


def test_more_files_than_max_files_is_400_and_server_goes_on(server: httpx.Client, digits: dict[Path, dict]):
    paths = list(digits)[: MAX_FILES + 1]
    r = server.post("/predict", files=_files(paths))
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert f"at most {MAX_FILES} images per request" in err and "max_files" in err, err
    assert server.post("/predict", files=_files(paths[:MAX_FILES])).status_code == 200


def _slow_upload(port: int, png: bytes) -> socket.socket:
    """A /predict request whose headers and first bytes are sent, the rest of its body withheld:
    from its headers on it counts as in flight, as a client on a slow link would."""
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.png"\r\n\r\n'
    body = head + png + b"\r\n--b--\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(head) + 10])
    return sock


def test_503_once_max_in_flight_requests_are_in_flight(server: httpx.Client, digits: dict[Path, dict]):
    path = next(iter(digits))
    in_flight = lambda: server.get("/health").json()["in_flight"]  # noqa: E731
    slow = []
    try:
        for _ in range(MAX_IN_FLIGHT):
            slow.append(_slow_upload(server.base_url.port, path.read_bytes()))
        _wait_for(lambda: in_flight() == MAX_IN_FLIGHT, f"{MAX_IN_FLIGHT} slow uploads to be in flight", 30)
        r = server.post("/predict", files=_files([path]))
        assert r.status_code == 503, r.text
        assert "server busy" in r.json()["error"] and f"limit {MAX_IN_FLIGHT}" in r.json()["error"]
    finally:
        for sock in slow:
            sock.close()
    _wait_for(lambda: in_flight() == 0, "the closed uploads to leave", 30)
    r = server.post("/predict", files=_files([path]))
    assert r.status_code == 200, r.text
    assert server.get("/metrics").text.count('foveal_responses_total{code="503"} 1') == 1
