"""Every shipped preset parses, names only registered things, and builds its losses and models."""

from __future__ import annotations

import pytest

from benchmark.cells import expand_cells
from benchmark.config import load_matrix, preset_names
from benchmark.core.errors import UserError
from benchmark.validate import check_matrix
from models import ARCHITECTURES


@pytest.mark.parametrize("name", preset_names())
def test_preset_is_valid(name, random_vgg16):
    matrix = load_matrix(name)
    check_matrix(matrix)
    cells = expand_cells(matrix)
    assert cells and len({c.cell_id for c in cells}) == len(cells)


def test_full_preset_without_weights_names_the_file_and_the_command(tmp_cache):
    with pytest.raises(UserError) as info:
        check_matrix(load_matrix("full.yaml"))
    assert "vgg16-397923af.pth" in str(info.value) and "ldct-bench weights fetch vgg16" in str(info.value)


def test_preset_shapes():
    assert len(expand_cells(load_matrix("small.yaml"))) == 8
    assert len(expand_cells(load_matrix("redcnn_wgan.yaml"))) == 24
    full = load_matrix("full.yaml")
    # every 2-D denoiser of the registry (the two-domain UNIT translator belongs to its training scheme)
    two_d = {n for n, a in ARCHITECTURES.items() if 2 in a.dims and not callable(getattr(a.cls, "translate", None))}
    assert {a.name for a in full.architectures} == two_d
    assert len(expand_cells(full)) == len(full.losses) * len(two_d) * 12 * 3
    mstlf = load_matrix("mstlf.yaml")
    assert {a.scheme for a in mstlf.architectures} == {"pix2pix", "cyclegan", "unit"}
    assert len(expand_cells(mstlf)) == 3 * 5 * 3
