"""The state_dict layout (key names, order and shapes) of every registered variant is frozen.

Checkpoints, `foveal convert` and the hub mapping of published weights (models/hub.py) all
address tensors by these names, so a refactor of the model code (shared layers, say) must
leave them as they are. The manifest holds a hash per variant and form, made by
`python tests/models/test_state_dict_layout.py` from the code before such a refactor; a
variant added on purpose gets its line by running that again. Built on the meta device:
no memory, no init, a few seconds for the whole registry.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from foveal.models import create_model, list_models
from foveal.models.registry import MODELS

MANIFEST = Path(__file__).with_name("state_dict_layout.json")
# The default form (3 channels, 1000 classes, the variant's own size) and the small-input form.
FORMS = {"default": {}, "small": {"img_size": 32, "in_chans": 1, "num_classes": 10}}


def layout_hash(name: str, form: str) -> str | None:
    """sha256 of [(key, shape), ...] of variant `name` built in `form`; None when it cannot take the form."""
    kw = FORMS[form]
    if kw.get("img_size", 10 ** 9) < MODELS.entry(name).meta["min_img_size"]:
        return None
    with torch.device("meta"):
        sd = create_model(name, **kw).state_dict()
    return hashlib.sha256(json.dumps([[k, list(v.shape)] for k, v in sd.items()]).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", list_models())
def test_state_dict_layout_is_unchanged(name: str) -> None:
    frozen = json.loads(MANIFEST.read_text())
    assert name in frozen, f"{name} is not in {MANIFEST.name}; a new variant: regenerate it (see the module doc)"
    for form in FORMS:
        assert layout_hash(name, form) == frozen[name].get(form), (
            f"{name} ({form} form): state_dict keys or shapes changed; checkpoints and hub weights would not load")


if __name__ == "__main__":
    MANIFEST.write_text(json.dumps({n: {f: h for f in FORMS if (h := layout_hash(n, f))} for n in list_models()},
                                   indent=1, sort_keys=True) + "\n")
    print(f"wrote {MANIFEST}")
