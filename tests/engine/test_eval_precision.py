"""A finished model is evaluated in the precision it is served in: `eval` (evaluate_model),
`Classifier.evaluate` and `predict` (Predictor) all run fp32, so on CUDA they cannot disagree
through bf16 autocast. A CPU run cannot see CUDA autocast, so the tests record the flag passed."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

import foveal.training.scoring as scoring_module
from foveal.training.scoring import score, score_with_logits


@pytest.fixture
def amp_flags(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The `enabled` argument of every autocast that a scoring pass enters."""
    flags, real = [], scoring_module.autocast

    def spy(device: torch.device, enabled: bool = True, cpu: bool = False):
        flags.append(enabled)
        return real(device, enabled, cpu)

    monkeypatch.setattr(scoring_module, "autocast", spy)
    return flags


def _pixels(split) -> torch.Tensor:
    """(N, C, H, W) uint8 of a split, whether it holds one tensor or an image store."""
    images = split.images
    return images if isinstance(images, torch.Tensor) else images.load()


def test_scoring_defaults_to_fp32():
    assert inspect.signature(score).parameters["amp"].default is False
    assert inspect.signature(score_with_logits).parameters["amp"].default is False


def test_eval_and_classifier_evaluate_run_fp32(tta_run: Path, amp_flags: list[bool]):
    from foveal.api import Classifier
    from foveal.tasks.inference import evaluate_model

    evaluate_model(tta_run, device="cpu")
    Classifier.load(tta_run, "cpu").evaluate(split="val")
    assert amp_flags and not any(amp_flags), "a finished model was evaluated under bf16 autocast (on CUDA)"


def test_eval_logits_are_predict_logits(tta_run: Path):
    """Same images, same views, same precision: evaluate_model's logits give Predictor's probabilities."""
    from foveal.tasks.inference import Predictor, evaluate_model

    _, logits, bundle = evaluate_model(tta_run, device="cpu")
    pred = Predictor.load(tta_run, "cpu")
    probs = pred.probabilities(_pixels(bundle.splits["test"]))
    torch.testing.assert_close(probs, torch.softmax(logits / pred.temperature, 1), rtol=1e-5, atol=1e-6)
