"""Unpaired sampling for CycleGAN/UNIT (``benchmark.sampling.sample_unpaired_patches``,
``disjoint_halves``): with the disjoint halves no LD/ND pair shares a slice or a patient; without them
the LD and ND slices, crop positions and augmentations are independent; the paired ``sample_patches``
still draws exactly what it drew before its crop was factored out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, chi2_contingency

from benchmark.core.errors import UserError
from benchmark.sampling import (
    disjoint_halves,
    patient_balanced_weights,
    sample_patches,
    sample_unpaired_patches,
)

S, SIDE = 12, 16
PATIENTS = np.array(["p3", "p3", "p1", "p1", "p1", "p0", "p0", "p4", "p4", "p2", "p2", "p2"])  # 5 patients, unsorted


def _stacks() -> tuple[torch.Tensor, torch.Tensor]:
    """Constant slices whose value is the row (inputs) or 100 + the row (targets): any crop, rotated or
    flipped, tells which slice it came from."""
    rows = torch.arange(S, dtype=torch.float32).view(S, 1, 1).expand(S, SIDE, SIDE)
    return rows.clone(), rows + 100


def _source(batch: torch.Tensor, offset: float = 0.0) -> list[int]:
    assert all(bool((im == im.flatten()[0]).all()) for im in batch)
    return [int(im.flatten()[0] - offset) for im in batch]


# ----- disjoint halves ------------------------------------------------------------------------------------


def test_disjoint_halves_split_the_sorted_patients():
    ld, nd = disjoint_halves(PATIENTS)
    assert ld.dtype == nd.dtype == np.bool_ and len(ld) == len(nd) == S
    assert not (ld & nd).any() and (ld | nd).all()
    assert set(PATIENTS[ld]) == {"p0", "p1", "p2"} and set(PATIENTS[nd]) == {"p3", "p4"}  # ceil(5/2) first
    ld2, nd2 = disjoint_halves(list(PATIENTS[::-1]))  # a list, another row order: the same patients per side
    assert set(PATIENTS[::-1][ld2]) == {"p0", "p1", "p2"} and set(PATIENTS[::-1][nd2]) == {"p3", "p4"}
    ld3, nd3 = disjoint_halves(["b", "a", "b"])
    assert list(ld3) == [False, True, False] and list(nd3) == [True, False, True]


@pytest.mark.parametrize("patients", [["p0"] * 5, [], ["x"]])
def test_fewer_than_two_patients_is_a_user_error_naming_the_count(patients):
    with pytest.raises(UserError, match=rf"at least 2 training patients.* has {len(set(patients))}") as err:
        disjoint_halves(patients)
    assert err.value.field == "training.disjoint_patients"


@pytest.mark.parametrize("augment", [False, True])
def test_disjoint_halves_never_pair_a_slice_or_a_patient(augment):
    inputs, targets = _stacks()
    ld, nd = disjoint_halves(PATIENTS)
    gen = torch.Generator().manual_seed(3)
    seen_ld: set[int] = set()
    seen_nd: set[int] = set()
    for _ in range(100):
        x, y, (i_ld, i_nd) = sample_unpaired_patches(inputs, targets, 20, 8, gen, augment=augment,
                                                     ld_rows=ld, nd_rows=nd)  # fmt: skip
        assert x.shape == y.shape == (20, 1, 8, 8)
        assert _source(x) == i_ld.tolist() and _source(y, 100) == i_nd.tolist()  # the crops are those slices'
        assert not (i_ld == i_nd).any()
        assert not (PATIENTS[i_ld.numpy()] == PATIENTS[i_nd.numpy()]).any()
        assert ld[i_ld.numpy()].all() and nd[i_nd.numpy()].all()
        seen_ld.update(i_ld.tolist())
        seen_nd.update(i_nd.tolist())
    assert seen_ld == set(np.flatnonzero(ld)) and seen_nd == set(np.flatnonzero(nd))  # every row of each side


def test_rows_as_indices_and_weights_restricted_to_them():
    inputs, targets = _stacks()
    gen = torch.Generator().manual_seed(0)
    weights = torch.zeros(S, dtype=torch.float64)
    weights[[1, 7]] = 1.0
    _, _, (i_ld, i_nd) = sample_unpaired_patches(
        inputs, targets, 200, None, gen, ld_rows=torch.tensor([0, 1, 2]), nd_rows=np.arange(6, 12),
        weights_ld=weights, weights_nd=weights)  # fmt: skip
    assert set(i_ld.tolist()) == {1} and set(i_nd.tolist()) == {7}
    # patient-balanced weights over one half: each of its patients about equally often
    ld, nd = disjoint_halves(PATIENTS)
    w = patient_balanced_weights(PATIENTS)
    _, _, (i_ld, _) = sample_unpaired_patches(inputs, targets, 3000, None, gen, ld_rows=ld, nd_rows=nd,
                                              weights_ld=w, weights_nd=w)  # fmt: skip
    counts = np.unique(PATIENTS[i_ld.numpy()], return_counts=True)[1]
    assert len(counts) == 3 and counts.min() > 900


def test_no_rows_to_draw_from_is_an_error():
    inputs, targets = _stacks()
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(UserError, match="low-dose"):
        sample_unpaired_patches(inputs, targets, 2, 8, gen, ld_rows=np.zeros(S, dtype=bool))
    with pytest.raises(ValueError, match="mask has 3 entries"):
        sample_unpaired_patches(inputs, targets, 2, 8, gen, nd_rows=np.ones(3, dtype=bool))


# ----- independence without the halves ----------------------------------------------------------------------


def test_ld_and_nd_slices_are_independent():
    inputs, targets = _stacks()
    gen = torch.Generator().manual_seed(11)
    x, y, (i_ld, i_nd) = sample_unpaired_patches(inputs, targets, 12_000, 4, gen)
    assert _source(x) == i_ld.tolist() and _source(y, 100) == i_nd.tolist()
    equal = int((i_ld == i_nd).sum())
    assert binomtest(equal, len(i_ld), 1 / S).pvalue > 1e-3, equal  # chance level: 1/S, not 1 as when paired
    table = np.zeros((S, S))
    np.add.at(table, (i_ld.numpy(), i_nd.numpy()), 1)
    assert chi2_contingency(table).pvalue > 1e-3  # the joint counts are the product of the marginals
    assert (table.sum(1) > 0).all() and (table.sum(0) > 0).all()


def test_crop_positions_and_augmentations_are_independent():
    """One slice, the same image as LD and ND: the two crops still differ, by position (different crops
    equal about 1/25 of the time at 5 x 5 positions) and by the D4 element (1/8 with whole slices)."""
    img = torch.arange(SIDE * SIDE, dtype=torch.float32).view(1, SIDE, SIDE)  # no symmetry: each crop is unique
    gen = torch.Generator().manual_seed(5)
    n = 4000
    x, y, _ = sample_unpaired_patches(img, img.clone(), n, SIDE - 4, gen)
    same = int((x == y).flatten(1).all(1).sum())
    assert binomtest(same, n, 1 / 25).pvalue > 1e-3, same
    x, y, _ = sample_unpaired_patches(img, img.clone(), n, None, gen, augment=True)
    same = int((x == y).flatten(1).all(1).sum())
    assert binomtest(same, n, 1 / 8).pvalue > 1e-3, same
    elements = {tuple(t.flatten()[[0, SIDE - 1]].tolist()) for t in x}
    assert len(elements) == 8  # every rotation/flip occurs


def test_seeded_determinism():
    inputs, targets = _stacks()
    ld, nd = disjoint_halves(PATIENTS)

    def draw(seed: int) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        x, y, (a, b) = sample_unpaired_patches(inputs + torch.rand(S, SIDE, SIDE, generator=torch.Generator().manual_seed(0)),
                                               targets, 16, 8, g, augment=True, ld_rows=ld, nd_rows=nd)  # fmt: skip
        return x, y, a, b

    torch.manual_seed(1)
    first = draw(4)
    torch.manual_seed(2)  # the global generator does not matter
    assert all(torch.equal(a, b) for a, b in zip(first, draw(4)))
    assert not all(torch.equal(a, b) for a, b in zip(first, draw(5)))


# ----- the paired sampler is unchanged ------------------------------------------------------------------------


def _naive_sample_patches(inputs, targets, n, patch_size, generator, *, augment=False, weights=None):
    """sample_patches as it was before its crop became ``_crop``, written out with loops: slices, then
    crop tops, lefts, then rotations and flips, all from ``generator`` in that order."""
    s, h, w = inputs.shape
    if weights is None:
        idx = torch.randint(0, s, (n,), generator=generator)
    else:
        idx = torch.multinomial(weights.double(), n, replacement=True, generator=generator)
    if patch_size is None or (patch_size >= h and patch_size >= w):
        xs = [inputs[i][None] for i in idx]
        ys = [targets[i][None] for i in idx]
    else:
        top = torch.randint(0, h - patch_size + 1, (n,), generator=generator)
        left = torch.randint(0, w - patch_size + 1, (n,), generator=generator)
        xs = [inputs[i, t:t + patch_size, c:c + patch_size][None] for i, t, c in zip(idx, top, left)]
        ys = [targets[i, t:t + patch_size, c:c + patch_size][None] for i, t, c in zip(idx, top, left)]
    if augment:
        k = torch.randint(0, 4, (n,), generator=generator)
        flip = torch.randint(0, 2, (n,), generator=generator)
        for i in range(n):
            xs[i], ys[i] = torch.rot90(xs[i], int(k[i]), (-2, -1)), torch.rot90(ys[i], int(k[i]), (-2, -1))
            if flip[i]:
                xs[i], ys[i] = xs[i].flip(-1), ys[i].flip(-1)
    return torch.stack(xs), torch.stack(ys), idx


@pytest.mark.parametrize(("patch_size", "augment", "weighted"), [
    (8, False, False), (8, True, False), (None, True, False), (12, True, True), (20, False, False), (5, False, True),
])  # fmt: skip
def test_sample_patches_draws_what_it_drew_before(patch_size, augment, weighted, generator):
    inputs = torch.rand(9, 20, 20, generator=generator)
    targets = torch.rand(9, 20, 20, generator=generator)
    weights = torch.arange(1.0, 10.0) if weighted else None
    g1, g2 = torch.Generator().manual_seed(100), torch.Generator().manual_seed(100)
    got = sample_patches(inputs, targets, 13, patch_size, g1, augment=augment, weights=weights)
    want = _naive_sample_patches(inputs, targets, 13, patch_size, g2, augment=augment, weights=weights)
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert torch.equal(g1.get_state(), g2.get_state())  # and consumed exactly the same random numbers
    with pytest.raises(UserError, match="exceeds the image size"):
        sample_patches(torch.rand(2, 20, 10), torch.rand(2, 20, 10), 1, 15, g1)
