"""models.layers.pool.AdaptiveAvgPool: torch's adaptive average pooling, exportable at every size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from foveal.models.layers.pool import AdaptiveAvgPool, pool_matrix


@pytest.mark.parametrize("h,w,m", [(3, 3, 5), (13, 13, 5), (7, 9, 5), (10, 10, 5), (5, 5, 5), (2, 6, 4), (1, 1, 3)])
def test_equals_torch_adaptive_average_pooling(h, w, m):
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    torch.testing.assert_close(AdaptiveAvgPool(m)(x), F.adaptive_avg_pool2d(x, m), rtol=0, atol=1e-12)


def test_pool_matrix_windows():
    """3 -> 5: windows [0,1) [0,2) [1,2) [1,3) [2,3), each an average."""
    p = pool_matrix(3, 5, torch.zeros(()))
    want = [[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1]]
    assert np.allclose(p.numpy(), want)


@pytest.mark.parametrize("size", [20, 64])
def test_lenet_exports_where_torch_pooling_did_not(tmp_path, size):
    """LeNet-5 at 20 px (3x3 map up to 5x5) and 64 px (13x13 down to 5x5): ONNX output equals eager."""
    ort = pytest.importorskip("onnxruntime")
    from foveal.card import ModelCard, Preprocessing
    from foveal.export.onnx_export import export_onnx
    from foveal.models import create_model

    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=3, in_chans=1, img_size=size).eval()
    card = ModelCard("lenet5", ["a", "b", "c"], 1, Preprocessing([0.5], [0.5], size))
    path = export_onnx(model, card, tmp_path / "m.onnx") or tmp_path / "m.onnx"
    x = torch.randint(0, 256, (4, 1, size, size), dtype=torch.uint8)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy() if sess.get_inputs()[0].type == "tensor(uint8)"
                          else x.float().numpy()})[0]
    with torch.no_grad():
        want = model((x.float() / 255 - 0.5) / 0.5).numpy()
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
