"""Import the `imagecorruptions` reference under today's numpy/scipy/scikit-image/setuptools.

imagecorruptions 1.1.2 (the last release) imports `pkg_resources` (gone from setuptools 81+),
`scipy.ndimage.interpolation` (removed), calls `skimage.filters.gaussian(multichannel=True)`
(now `channel_axis=-1`) and uses `np.float_` (numpy 2). These shims restore exactly those
names, touching nothing else, so the reference computes what it always did.

Not in the `test` extra: its opencv-python dependency needs the system libGL, so the
comparison tests skip when it cannot be imported (`pip install imagecorruptions` to run them).
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np


def load_reference():
    """The `imagecorruptions` package (shimmed), or None when it or its dependencies are missing."""
    if importlib.util.find_spec("imagecorruptions") is None or importlib.util.find_spec("cv2") is None:
        return None
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        import os

        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda mod, rel: os.path.join(
            os.path.dirname(sys.modules[mod].__file__), rel)
        sys.modules["pkg_resources"] = shim
    import scipy.ndimage

    if "scipy.ndimage.interpolation" not in sys.modules:
        try:
            import scipy.ndimage.interpolation  # noqa: F401
        except ImportError:
            sys.modules["scipy.ndimage.interpolation"] = scipy.ndimage
    try:  # opencv-python needs the system's libGL: without it, import fails and the tests skip
        import imagecorruptions
        from imagecorruptions import corruptions as ic
    except ImportError:
        return None
    from skimage.filters import gaussian as _gaussian

    def gaussian(image, sigma=1, multichannel=None, **kw):
        if multichannel:
            kw["channel_axis"] = -1
        return _gaussian(image, sigma=sigma, **kw)

    class _NumpyCompat(types.ModuleType):
        float_ = np.float64

        def __getattr__(self, name):
            return getattr(np, name)

    ic.gaussian = gaussian
    ic.np = _NumpyCompat("numpy")
    return imagecorruptions
