"""Robustness: common corruptions, noise/occlusion sweeps, adversarial attacks and robust training.

See :mod:`foveal.robustness.measure` for the `robustness.json` schema written by `foveal robust`.
"""
