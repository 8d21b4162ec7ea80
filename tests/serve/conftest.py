"""Fixtures for serving tests: a small run folder (no training needed), its ONNX export, a client."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import digits_arrays


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LeNet-5 run folder with random weights for 10 digit classes at 28 px, plus model.onnx."""
    import torch

    from foveal.card import ModelCard, Preprocessing
    from foveal.training.checkpoint import save_weights
    from foveal.export.onnx_export import export_onnx
    from foveal.models import create_model

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("serve_run")
    model = create_model("lenet5", num_classes=10, in_chans=1, img_size=28).eval()
    card = ModelCard("lenet5", [str(i) for i in range(10)], 1, Preprocessing([0.3], [0.4], 28))
    save_weights(run / "best.safetensors", model, card)
    export_onnx(model, card, run / "export" / "model.onnx")
    return run


@pytest.fixture(scope="session")
def digit_pngs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight real digit images as PNG files of varied size."""
    root = tmp_path_factory.mktemp("digit_pngs")
    x, y = digits_arrays()
    out = []
    for i in range(8):
        p = root / f"digit{i}_{y[i]}.png"
        Image.fromarray(x[i]).resize((20 + 4 * i, 20 + 4 * i)).save(p)
        out.append(p)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(tiny_run: Path):
    """The app served by uvicorn in a background thread; yields its base URL."""
    import uvicorn

    from foveal.config import ServeConfig
    from foveal.serve.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(tiny_run, ServeConfig(max_wait_ms=2)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start in 30 s"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="session")
def chrome_driver(tmp_path_factory: pytest.TempPathFactory):
    """Headless Chromium through selenium; skips when chromium, chromedriver or selenium is absent."""
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,900",
              f"--user-data-dir={tmp_path_factory.mktemp('chrome_profile')}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
    yield driver
    driver.quit()
