"""`foveal export`, `serve` and `robust` flags are built from their config dataclasses, and the
spellings they had before still fill the same fields."""

from __future__ import annotations

import dataclasses

import pytest

from foveal.cli.config_args import dataclass_from_args
from foveal.cli.main import build_parser
from foveal.config import ConfigError, ExportConfig, RobustConfig, ServeConfig, from_dict
from foveal.config_help import sections


def _parse(*argv: str):
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("verb,cls,pos", [("export", ExportConfig, "r"), ("serve", ServeConfig, "m.onnx"),
                                          ("robust", RobustConfig, "r")])
def test_no_flag_gives_the_dataclass_defaults_and_every_field_has_a_flag(verb, cls, pos):
    assert dataclass_from_args(cls, _parse(verb, pos)) == cls()
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[verb]
    flags = {s for a in sub._actions for s in a.option_strings}
    for _, _, rows in sections(cls):
        for row in rows:
            assert f"--{row['path']}" in flags or f"--{row['path'].replace('_', '-')}" in flags, row["path"]


def test_export_spellings():
    cfg = dataclass_from_args(ExportConfig, _parse(
        "export", "r", "--format", "onnx", "--format", "int8", "--out", "o", "--calib-images", "64", "--eval-limit",
        "10", "--threads", "2", "--quant-format", "qoperator", "--no-per-channel", "--reduce-range", "--calibration",
        "entropy", "--max-int8-drop", "100"))
    assert cfg.formats == ["onnx", "int8"] and cfg.out_dir == "o" and (cfg.calib_images, cfg.eval_limit) == (64, 10)
    assert cfg.threads == 2 and cfg.limits.max_int8_drop == 100.0
    assert dataclasses.astuple(cfg.quant)[:4] == ("qoperator", False, True, "entropy")
    assert dataclass_from_args(ExportConfig, _parse("export", "r", "--format", "int8")).formats == ["int8"]
    assert dataclass_from_args(ExportConfig, _parse("export", "r", "--per-channel")).quant.per_channel is True
    with pytest.raises(ConfigError, match="formats"):
        dataclass_from_args(ExportConfig, _parse("export", "r", "--format", "tflite"))


def test_serve_spellings():
    cfg = dataclass_from_args(ServeConfig, _parse(
        "serve", "m.onnx", "--host", "0.0.0.0", "--port", "9000", "--max-batch", "8", "--max-wait-ms", "2.5",
        "--backend", "onnx", "--max-upload-mb", "5", "--max-uploads-in-flight-mb", "64", "--max-pixels", "1000000",
        "--threads", "3", "--topk", "2"))
    assert (cfg.host, cfg.port, cfg.max_batch, cfg.max_wait_ms, cfg.backend) == ("0.0.0.0", 9000, 8, 2.5, "onnx")
    assert (cfg.max_upload_mb, cfg.max_uploads_in_flight_mb, cfg.max_pixels) == (5.0, 64.0, 1_000_000)
    assert (cfg.threads, cfg.topk) == (3, 2)
    with pytest.raises(SystemExit):  # a Literal field's flag is checked by argparse, before anything loads
        _parse("serve", "m.onnx", "--backend", "tensorrt")
    with pytest.raises(ConfigError, match="backend"):  # the same value from a dict (config.from_dict)
        from_dict({"backend": "tensorrt"}, ServeConfig)


def test_robust_spellings():
    cfg = dataclass_from_args(RobustConfig, _parse(
        "robust", "r", "--split", "val", "--limit", "120", "--attack-limit", "60", "--corruptions", "fog, pixelate",
        "--severities", "1,5", "--eps", "0,0.1", "--eps-l2", "0,1", "--noise", "0,0.2", "--pgd-steps", "5",
        "--skip", "occlusion", "--device", "cpu", "--batch-size", "32", "--seed", "3"))
    assert (cfg.split, cfg.limit, cfg.attack_limit, cfg.pgd_steps, cfg.seed) == ("val", 120, 60, 5, 3)
    assert cfg.corruptions == ["fog", "pixelate"] and cfg.severities == [1, 5]
    assert (cfg.eps_linf, cfg.eps_l2, cfg.noise_stds) == ([0.0, 0.1], [0.0, 1.0], [0.0, 0.2])
    assert cfg.skip == ["occlusion"] and (cfg.device, cfg.batch_size) == ("cpu", 32)
    assert dataclass_from_args(RobustConfig, _parse("robust", "r")).batch_size == "auto"
