"""Per-image random draws: each image's numbers come from a generator keyed on (seed, stream, index) alone,
so a result does not depend on the batch an image sits in; a plain generator draws for the whole batch."""

from __future__ import annotations

import hashlib

import pytest
import torch

from foveal.robustness import draws as D
from foveal.robustness.draws import ImageDraws


def _seed(seed: int, stream: str, index: int) -> int:
    """The key as documented: a 63-bit integer from blake2b-64 of 'seed:stream:index' (little endian)."""
    digest = hashlib.blake2b(f"{seed}:{stream}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") // 2


def test_key_is_the_documented_hash():
    keys = {D._key(s, st, i) for s in (0, 1) for st in ("a", "b") for i in range(50)}
    assert len(keys) == 200  # distinct streams and images: distinct generators
    for s, st, i in ((0, "noise:0.1", 0), (3, "pgd_linf:0.3", 17), (12345, "huge", 999)):
        k = D._key(s, st, i)
        assert k == _seed(s, st, i) and 0 <= k < 2 ** 63


def test_image_draws_are_keyed_per_image_whatever_the_batch():
    full = ImageDraws(5, "s", range(10))
    part = ImageDraws(5, "s", [6, 7, 8])
    assert len(full) == 10 and len(part) == 3
    for draw, kw in ((D.rand, {}), (D.randn, {}), (D.rand, {"dtype": torch.float64}),
                     (D.randn, {"dtype": torch.float64})):
        a, b = draw((10, 2, 3), full, torch.device("cpu"), **kw), draw((3, 2, 3), part, torch.device("cpu"), **kw)
        assert a.shape == (10, 2, 3) and a.dtype == kw.get("dtype", torch.float32)
        assert torch.equal(a[6:9], b)
    a = D.randint(0, 1000, (10, 4), ImageDraws(5, "s", range(10)), torch.device("cpu"))
    b = D.randint(0, 1000, (3, 4), ImageDraws(5, "s", [6, 7, 8]), torch.device("cpu"))
    assert a.shape == (10, 4) and torch.equal(a[6:9], b) and 0 <= a.min() and a.max() < 1000
    # image i's numbers are those of torch's generator seeded with its key
    ref = torch.rand((2, 3), generator=torch.Generator().manual_seed(_seed(5, "s", 7)))
    assert torch.equal(D.rand((3, 2, 3), ImageDraws(5, "s", [6, 7, 8]), torch.device("cpu"))[1], ref)
    ref = torch.randn((), generator=torch.Generator().manual_seed(_seed(2, "t", 0)))  # shape (1,): a scalar each
    assert torch.equal(D.randn(1, ImageDraws(2, "t", [0]), torch.device("cpu"))[0], ref)
    ref = torch.randint(3, 9, (5,), generator=torch.Generator().manual_seed(_seed(2, "t", 4)))
    assert torch.equal(D.randint(3, 9, (1, 5), ImageDraws(2, "t", [4]), torch.device("cpu"))[0], ref)
    # other streams and seeds draw other numbers
    base = D.rand((3, 4), ImageDraws(5, "s", range(3)), torch.device("cpu"))
    assert not torch.equal(base, D.rand((3, 4), ImageDraws(5, "u", range(3)), torch.device("cpu")))
    assert not torch.equal(base, D.rand((3, 4), ImageDraws(6, "s", range(3)), torch.device("cpu")))


def test_scalar_shapes_and_the_batch_size_check():
    g = ImageDraws(0, "s", range(4))
    assert D.rand(4, g, torch.device("cpu")).shape == (4,)
    assert D.randint(0, 2, 4, g, torch.device("cpu")).shape == (4,)
    with pytest.raises(ValueError, match="draws for 3 images asked of ImageDraws keyed on 4 images"):
        D.rand((3, 2), g, torch.device("cpu"))
    with pytest.raises(ValueError, match="draws for 5 images"):
        D.randint(0, 2, 5, g, torch.device("cpu"))


def test_a_plain_generator_draws_for_the_whole_batch():
    cpu = torch.device("cpu")
    for draw, ref in ((D.rand, torch.rand), (D.randn, torch.randn)):
        got = draw((4, 3), torch.Generator().manual_seed(1), cpu, torch.float64)
        assert torch.equal(got, ref((4, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    got = D.randint(2, 7, 6, torch.Generator().manual_seed(1), cpu)
    assert torch.equal(got, torch.randint(2, 7, (6,), generator=torch.Generator().manual_seed(1)))
    got = D.randint(2, 7, (2, 3), torch.Generator().manual_seed(1), cpu)
    assert torch.equal(got, torch.randint(2, 7, (2, 3), generator=torch.Generator().manual_seed(1)))
    meta = torch.device("meta")  # the device argument is honoured (meta: no memory, no generator)
    assert D.rand(3, None, meta).device == meta and D.randn(3, None, meta).device == meta
    assert D.randint(0, 5, 3, None, meta).device == meta
    assert D.rand(3, None, meta, torch.float16).dtype == torch.float16
    assert D.randn(3, None, meta, torch.float16).dtype == torch.float16


def test_poisson_and_image_generator():
    rate = torch.tensor([[1.0, 5.0], [20.0, 0.5], [3.0, 3.0]])
    g = ImageDraws(9, "shot", range(3))
    got = D.poisson(rate, g)
    for i in range(3):
        ref = torch.poisson(rate[i:i + 1], generator=torch.Generator().manual_seed(_seed(9, "shot", i)))
        assert torch.equal(got[i:i + 1], ref)
    assert torch.equal(D.poisson(rate, torch.Generator().manual_seed(2)),
                       torch.poisson(rate, generator=torch.Generator().manual_seed(2)))
    assert D.image_generator(g, 2) is g.generators[2]
    plain = torch.Generator()
    assert D.image_generator(plain, 2) is plain and D.image_generator(None, 0) is None
