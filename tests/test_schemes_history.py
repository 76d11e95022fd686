"""The image history pool (Shrivastava et al. 2017; CycleGAN's 50-image buffer): pass-through until
full, then old images at probability ½ (binomial test), only images that were stored, state round-trip
and seeded determinism, every draw from the generator passed in."""

from __future__ import annotations

import random

import pytest
import torch
from scipy.stats import binomtest

from benchmark.schemes.history import ImagePool


def _batch(start: int, n: int, shape: tuple[int, ...] = (1, 2, 2)) -> torch.Tensor:
    """``n`` images whose every pixel holds its serial number ``start``, ``start + 1``, …: returned images
    can be traced back to the query that inserted them."""
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, *shape).clone()


def _ids(batch: torch.Tensor) -> list[int]:
    return [int(im.flatten()[0]) for im in batch]


def test_passes_images_through_until_full_without_drawing(generator):
    pool = ImagePool(10)
    state = generator.get_state()
    for start in (0, 4):
        batch = _batch(start, 4)
        assert torch.equal(pool.query(batch, generator), batch)
        assert torch.equal(generator.get_state(), state)  # no random numbers while filling
    assert _ids(torch.stack(pool.images)) == list(range(8))
    out = _ids(pool.query(_batch(8, 4), generator))  # the first 2 fill it, the last 2 may be swapped
    assert len(pool) == 10 and out[:2] == [8, 9] and set(out[2:]) <= set(range(12))
    assert not torch.equal(generator.get_state(), state)


def test_old_images_come_back_at_probability_one_half(generator):
    size, queries, batch = 50, 4000, 4
    pool = ImagePool(size)
    pool.query(_batch(0, size), generator)  # full
    inserted = set(range(size))
    old = total = 0
    serial = size
    for _ in range(queries // batch):
        out = _ids(pool.query(_batch(serial, batch), generator))
        for k, got in enumerate(out):
            new = serial + k
            if got != new:
                # an old image: one that was inserted before this query (an earlier batch, or this batch's
                # earlier images, which the pool stored when they were swapped in)
                assert got in inserted and got < new
                old += 1
            total += 1
            inserted.add(new)
        serial += batch
    test = binomtest(old, total, 0.5)
    assert test.pvalue > 1e-3, (old, total)
    assert 0.45 < old / total < 0.55


def test_every_returned_image_was_inserted_and_the_pool_keeps_its_size(generator):
    pool = ImagePool(8)
    seen: set[int] = set()
    serial = 0
    returned: list[int] = []
    for n in (3, 5, 1, 7, 2, 6, 4) * 5:
        out = pool.query(_batch(serial, n), generator)
        seen.update(range(serial, serial + n))
        returned += _ids(out)
        assert out.shape == (n, 1, 2, 2) and len(pool) == min(8, serial + n)
        serial += n
    assert set(returned) <= seen
    assert len(set(returned)) < len(returned)  # not a pass-through: some images came back more than once...
    assert len(set(_ids(torch.stack(pool.images)))) == 8  # ...and the pool holds 8 distinct images


def test_state_round_trip_gives_identical_subsequent_outputs(generator):
    pool = ImagePool(6)
    for _ in range(5):
        pool.query(torch.rand(3, 1, 4, 4, generator=generator), generator)
    state = pool.state_dict()
    assert state["images"].shape == (6, 1, 4, 4) and state["images"].device.type == "cpu" and state["size"] == 6
    rng_state = generator.get_state()
    batches = [torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(k)) for k in range(10)]
    first = [pool.query(b, generator) for b in batches]

    restored = ImagePool(6)
    restored.load_state_dict(state)
    generator.set_state(rng_state)
    second = [restored.query(b, generator) for b in batches]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert any(not torch.equal(a, b) for a, b in zip(first, batches))  # the pool did swap images

    # a fresh pool (the state not restored) answers differently: the test can fail
    generator.set_state(rng_state)
    fresh = ImagePool(6)
    assert any(not torch.equal(a, fresh.query(b, generator)) for a, b in zip(first, batches))


def test_empty_state_and_size_mismatch():
    empty = ImagePool(4)
    state = empty.state_dict()
    assert state["images"].numel() == 0
    other = ImagePool(4)
    other.load_state_dict(state)
    assert len(other) == 0
    with pytest.raises(ValueError, match="size 4"):
        ImagePool(5).load_state_dict(state)
    with pytest.raises(ValueError, match=">= 0"):
        ImagePool(-1)


def test_seeded_determinism_and_no_python_random():
    def run(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        pool = ImagePool(5)
        return [pool.query(_batch(4 * i, 4), g) for i in range(30)]

    random.seed(0)
    torch.manual_seed(0)
    a = run(7)
    random.seed(99)  # neither Python's nor the global torch generator may matter
    torch.manual_seed(99)
    b = run(7)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, y) for x, y in zip(a, run(8)))


def test_size_zero_passes_through_and_outputs_are_detached(generator):
    x = torch.rand(3, 1, 4, 4, generator=generator, requires_grad=True)
    out = ImagePool(0).query(x * 2, generator)
    assert torch.equal(out, x.detach() * 2) and not out.requires_grad
    pool = ImagePool(2)
    for _ in range(10):
        out = pool.query(x * 2, generator)
        assert not out.requires_grad and all(not im.requires_grad for im in pool.images)


def test_a_batch_of_another_shape_is_an_error(generator):
    pool = ImagePool(4)
    pool.query(torch.rand(2, 1, 4, 4, generator=generator), generator)
    with pytest.raises(ValueError, match="shape"):
        pool.query(torch.rand(2, 1, 5, 5, generator=generator), generator)
