"""foveal: image classification with neural networks, from labeled images to a deployed model."""

from ._version import __version__


def __getattr__(name: str):
    # Lazy imports keep `import foveal` light (the inference install has no torch).
    if name == "Classifier":
        from .api import Classifier

        return Classifier
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    if name == "fit":
        from .tasks.fit import fit

        return fit
    if name == "find_label_issues":
        from .tasks.labels import find_label_issues

        return find_label_issues
    if name in ("RunConfig", "load_config"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'foveal' has no attribute '{name}'")


__all__ = ["Classifier", "fit", "create_model", "find_label_issues", "list_models", "RunConfig", "load_config",
           "__version__"]
