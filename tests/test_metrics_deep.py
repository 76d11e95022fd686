"""Deep metrics (LPIPS, DISTS) and the unavailable-weights path.

ImageNet backbones cannot be had offline, so these tests write *seeded random* backbones into a
temporary torch cache (``tmp_cache``) with :func:`benchmark.core.weights.write_random_weights`. The values
are meaningless as quality scores; the tests check code paths and that our reference-cached scorers
equal the libraries' own ``forward`` and agree with pyiqa's independent implementations on the same
backbone and learned layers. Any download attempt fails the test.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis.metrics import MetricUnavailable, available, compute_metrics, unavailable_metrics
from benchmark.core import weights
from benchmark.core.compat import ensure_torchvision
from benchmark.core.conventions import window_to_unit


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every download entry point used by torchvision, lpips, DISTS and pyiqa raise."""
    ensure_torchvision()
    import pyiqa.utils.download_util as pyiqa_dl

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"attempted download: {args[:1]}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", boom)
    monkeypatch.setattr(pyiqa_dl, "download_url_to_file", boom)


def images(rng: np.random.Generator, n: int = 3, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    ref = rng.normal(40.0, 120.0, (n, size, size)).astype(np.float32)
    pred = ref + rng.normal(0.0, 40.0, ref.shape).astype(np.float32)
    return pred, ref


def unit_rgb(hu: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(window_to_unit(hu))[:, None].expand(-1, 3, -1, -1).contiguous()


def test_missing_backbone_is_reported_not_fatal(tmp_cache: Path, rng: np.random.Generator, no_download: None) -> None:
    pred, ref = images(rng)
    ok, reason = available("lpips")
    assert not ok
    assert str(weights.weight_path("alexnet")) in reason and "ldct-bench weights fetch alexnet" in reason
    assert set(unavailable_metrics(["psnr", "lpips", "dists", "lpips_vgg"])) == {"lpips", "dists", "lpips_vgg"}
    with pytest.raises(MetricUnavailable, match="ldct-bench weights fetch alexnet") as exc:
        compute_metrics(["psnr", "lpips"], pred, ref)
    assert exc.value.name == "lpips"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = compute_metrics(["psnr", "lpips"], pred, ref, skip_unavailable=True)
    assert list(out) == ["psnr"]
    assert any("lpips" in str(w.message) for w in caught)


def test_lpips_alex_matches_lpips_and_pyiqa(tmp_cache: Path, rng: np.random.Generator, no_download: None) -> None:
    import lpips
    from pyiqa.archs.lpips_arch import LPIPS as PyiqaLPIPS

    weights.write_random_weights("alexnet", seed=7)
    assert available("lpips") == (True, "")
    pred, ref = images(rng)
    cache: dict = {}
    ours = compute_metrics(["lpips"], pred, ref, ref_cache=cache, batch_size=2)["lpips"]
    again = compute_metrics(["lpips"], pred, ref, ref_cache=cache, batch_size=2)["lpips"]
    np.testing.assert_array_equal(ours, again)  # served from the cached reference features
    x, y = unit_rgb(pred), unit_rgb(ref)
    with torch.no_grad():
        ref_lib = lpips.LPIPS(net="alex", verbose=False).eval()(x, y, normalize=True).reshape(-1).double().numpy()
        linear = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
        pyiqa_val = PyiqaLPIPS(net="alex", pretrained_model_path=str(linear))(x, y).reshape(-1).double().numpy()
    # Same library, forward split in two: float32 summation order only.
    np.testing.assert_allclose(ours, ref_lib, rtol=1e-5)
    # pyiqa's independent LPIPS on the same random AlexNet and the same linear layers.
    np.testing.assert_allclose(ours, pyiqa_val, rtol=1e-4)
    assert np.all(ours > 0)


@pytest.mark.slow
def test_vgg_metrics_match_libraries(
    tmp_cache: Path, rng: np.random.Generator, no_download: None, tmp_path: Path
) -> None:
    """lpips_vgg vs lpips.LPIPS(vgg); dists vs DISTS_pytorch and pyiqa's DISTS, on a random VGG16."""
    import lpips
    from DISTS_pytorch import DISTS as DISTSLib
    from pyiqa.archs.dists_arch import DISTS as PyiqaDISTS

    from analysis.metrics.deep import dists_alpha_beta_file

    weights.write_random_weights("vgg16", seed=3)
    pred, ref = images(rng, n=2, size=64)
    out = compute_metrics(["lpips_vgg", "dists"], pred, ref)
    x, y = unit_rgb(pred), unit_rgb(ref)
    with torch.no_grad():
        want_lpips = lpips.LPIPS(net="vgg", verbose=False).eval()(x, y, normalize=True).reshape(-1).double().numpy()
        lib = DISTSLib(load_weights=False)
        ab = torch.load(dists_alpha_beta_file(), weights_only=True)
        lib.alpha.data, lib.beta.data = ab["alpha"], ab["beta"]
        want_dists = lib(x, y).reshape(-1).double().numpy()
        ab_file = tmp_path / "dists_alpha_beta.pth"
        torch.save({"alpha": ab["alpha"], "beta": ab["beta"]}, ab_file)
        pyiqa_dists = PyiqaDISTS(pretrained_model_path=str(ab_file))(x, y).reshape(-1).double().numpy()
    np.testing.assert_allclose(out["lpips_vgg"], want_lpips, rtol=1e-5)
    np.testing.assert_allclose(out["dists"], want_dists, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["dists"], pyiqa_dists, rtol=1e-5, atol=1e-7)
    assert np.all((out["dists"] > 0) & (out["dists"] < 1))


def test_scorer_is_rebuilt_when_the_weight_file_changes(
    tmp_cache: Path, rng: np.random.Generator, no_download: None
) -> None:
    pred, ref = images(rng, n=1)
    weights.write_random_weights("alexnet", seed=1)
    first = compute_metrics(["lpips"], pred, ref)["lpips"]
    weights.weight_path("alexnet").unlink()
    weights.write_random_weights("alexnet", seed=2)
    second = compute_metrics(["lpips"], pred, ref)["lpips"]
    assert not np.allclose(first, second)
