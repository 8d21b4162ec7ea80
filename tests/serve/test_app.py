"""Serving API: a good request matches `foveal predict`, and each bad request gets a JSON 4xx
while the server keeps answering."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from foveal.config import ServeConfig
from foveal.serve.app import create_app


@pytest.fixture(scope="module", params=["torch", "onnx"])
def client(request, tiny_run: Path):
    app = create_app(tiny_run, ServeConfig(backend=request.param, max_upload_mb=5, max_wait_ms=2))
    with TestClient(app) as c:
        yield c


def _post(client: TestClient, name: str, data: bytes, field: str = "file"):
    return client.post("/predict", files={field: (name, data, "application/octet-stream")})


def _assert_still_serving(client: TestClient, png: Path) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert _post(client, png.name, png.read_bytes()).status_code == 200


def _bomb_png(side: int = 20_000) -> bytes:
    """A real side x side 8-bit grayscale PNG of zeros: ~400 MB of pixels in a few hundred kB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp, row = zlib.compressobj(9), b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_good_request_matches_predict_cli(client: TestClient, tiny_run: Path, digit_pngs: list[Path]):
    from foveal.tasks.inference import Predictor

    png = digit_pngs[0]
    r = _post(client, png.name, png.read_bytes())
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert res["filename"] == png.name and len(res["top"]) == 5
    probs = [t["prob"] for t in res["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
    ref = Predictor.load(tiny_run, "cpu").predict_files([png], topk=5)[0]
    assert [t["class"] for t in res["top"]] == [t["class"] for t in ref["top"]]
    np.testing.assert_allclose(probs, [t["prob"] for t in ref["top"]], atol=1e-5)


def test_several_files_in_one_request(client: TestClient, digit_pngs: list[Path]):
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p in digit_pngs[:3]]
    r = client.post("/predict", files=files)
    assert r.status_code == 200, r.text
    assert [x["filename"] for x in r.json()["results"]] == [p.name for p in digit_pngs[:3]]


def test_non_image(client: TestClient, digit_pngs: list[Path]):
    r = _post(client, "notes.png", b"this is plain text, not a picture\n" * 10)
    assert r.status_code == 400 and "notes.png" in r.json()["error"] and "not an image" in r.json()["error"]
    _assert_still_serving(client, digit_pngs[0])


def test_truncated_jpeg(client: TestClient, digit_pngs: list[Path]):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, "JPEG")
    r = _post(client, "cut.jpg", buf.getvalue()[: len(buf.getvalue()) // 2])
    assert r.status_code == 400, r.text
    assert "cut.jpg" in r.json()["error"] and "foveal-upload" not in r.json()["error"]
    _assert_still_serving(client, digit_pngs[0])


def test_50mb_upload_refused(client: TestClient, digit_pngs: list[Path]):
    r = _post(client, "huge.png", b"\0" * (50 * 1024 * 1024))
    assert r.status_code == 413 and "limit" in r.json()["error"]
    _assert_still_serving(client, digit_pngs[0])


def test_streamed_upload_without_length_refused(client: TestClient, digit_pngs: list[Path]):
    """Chunked bodies have no Content-Length: the cap is enforced while reading the stream."""
    sent = []

    def body():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n"
        for _ in range(50):  # 50 x 1 MiB
            sent.append(1)
            yield b"\0" * (1 << 20)
        yield b"\r\n--b--\r\n"

    r = client.post("/predict", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "limit" in r.json()["error"]
    _assert_still_serving(client, digit_pngs[0])


def test_decompression_bomb_png(client: TestClient, digit_pngs: list[Path]):
    r = _post(client, "bomb.png", _bomb_png())
    assert r.status_code == 400, r.text
    assert "bomb.png" in r.json()["error"] and "pixels" in r.json()["error"]
    _assert_still_serving(client, digit_pngs[0])


def test_missing_field(client: TestClient, digit_pngs: list[Path]):
    r = _post(client, "a.png", digit_pngs[0].read_bytes(), field="image")
    assert r.status_code == 422 and "missing form field 'file'" in r.json()["error"]
    r = client.post("/predict", data={"x": "1"})
    assert r.status_code == 422
    r = client.post("/predict", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code in (400, 422) and "error" in r.json()
    _assert_still_serving(client, digit_pngs[0])


def test_metadata_metrics_and_page(client: TestClient):
    m = client.get("/metadata").json()
    assert m["classes"] == [str(i) for i in range(10)] and m["img_size"] == 28
    assert "foveal_responses_total" in client.get("/metrics").text
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "http" not in page.text.split("<script>")[1]
