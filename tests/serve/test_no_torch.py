"""The light inference install: `predict` and `serve` run an exported model with torch unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# Run in a fresh interpreter in which importing torch (or torchvision) raises ImportError, as in an
# install without them; anything on the ONNX path that reaches for torch fails the test.
_BLOCK = textwrap.dedent("""
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError(f"{name} is blocked: the inference install has no torch")
    sys.meta_path.insert(0, _NoTorch())
""")


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCK + textwrap.dedent(code)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_predict_cli_on_onnx_without_torch(tiny_run, digit_pngs, tmp_path):
    out = _run(f"""
        from foveal.cli.main import main
        raise SystemExit(main(["predict", {str(tiny_run / "export" / "model.onnx")!r}, {str(digit_pngs[0].parent)!r},
                               "--json"]))
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert len(records) == len(digit_pngs) and all(len(r["top"]) == 5 for r in records)


def test_serve_onnx_without_torch(tiny_run, digit_pngs, tmp_path):
    out = _run(f"""
        import json, sys
        from fastapi.testclient import TestClient
        from foveal.serve.app import create_app
        with TestClient(create_app({str(tiny_run / "export" / "model.onnx")!r})) as client:
            r = client.post("/predict", files={{"file": open({str(digit_pngs[0])!r}, "rb")}})
            print(json.dumps({{"status": r.status_code, "body": r.json(), "meta": client.get("/metadata").json(),
                              "torch_loaded": "torch" in sys.modules}}))
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["status"] == 200, res
    assert res["meta"]["backend"] == "onnx" and not res["torch_loaded"]
