"""Weight-file management: paths, status, import with hash checks, fetch (via a file:// URL, no network),
random test backbones, and the ``weights`` CLI. Everything under the temporary ``tmp_cache``."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from analysis.cli import weights_app
from benchmark.core import weights
from benchmark.core.compat import ensure_torchvision
from benchmark.core.errors import UnknownNameError, UserError
from benchmark.core.weights import WEIGHTS, WeightFile


@pytest.fixture
def tiny(tmp_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A registered fake weight file (a small tensor file) whose published hash prefix is right."""
    src = tmp_path / "tiny-source.pth"
    torch.save({"w": torch.arange(10.0)}, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    wf = WeightFile(
        key="tiny", filename=f"tiny-{digest[:8]}.pth", url=src.resolve().as_uri(), sha256=None,
        sha256_prefix=digest[:8], size_bytes=src.stat().st_size, used_by=("test",),
    )
    monkeypatch.setitem(WEIGHTS, "tiny", wf)
    return "tiny", src


def test_registry_has_the_backbones_with_torchvision_names() -> None:
    ensure_torchvision()
    from torchvision.models import AlexNet_Weights, VGG16_Weights, VGG19_Weights

    for key, tv in [("alexnet", AlexNet_Weights), ("vgg16", VGG16_Weights), ("vgg19", VGG19_Weights)]:
        wf = WEIGHTS[key]
        assert wf.url == tv.IMAGENET1K_V1.url  # the file torchvision itself would download
        assert wf.filename == wf.url.rsplit("/", 1)[1]
        assert wf.filename.endswith(f"-{wf.sha256_prefix}.pth")


def test_weight_path_is_torch_hub_checkpoints(tmp_cache: Path) -> None:
    path = weights.weight_path("vgg16")
    assert path == tmp_cache / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    with pytest.raises(UnknownNameError, match="vgg16"):
        weights.weight_path("vgg61")


def test_require_names_path_and_commands(tmp_cache: Path) -> None:
    with pytest.raises(UserError) as exc:
        weights.require("vgg16")
    msg = str(exc.value)
    assert str(weights.weight_path("vgg16")) in msg
    assert "ldct-bench weights fetch vgg16" in msg and "ldct-bench weights import" in msg


def test_status_reports_presence_size_and_hash(tmp_cache: Path, tiny: tuple[str, Path]) -> None:
    key, src = tiny
    rows = {r["key"]: r for r in weights.status()}
    assert set(rows) >= {"alexnet", "vgg16", "vgg19", key}
    assert not rows[key]["present"] and rows[key]["hash_ok"] is None
    weights.import_file(src, key)
    row = {r["key"]: r for r in weights.status()}[key]
    assert row["present"] and row["size_bytes"] == src.stat().st_size
    assert row["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() and row["hash_ok"] is True


def test_import_checks_the_hash(tmp_cache: Path, tiny: tuple[str, Path], tmp_path: Path) -> None:
    key, _src = tiny
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not the file")
    with pytest.raises(UserError, match="does not match"):
        weights.import_file(bad, key)
    assert not weights.is_present(key)
    dst = weights.import_file(bad, key, check_hash=False)
    assert dst.read_bytes() == b"not the file"
    with pytest.raises(UserError, match="no such file"):
        weights.import_file(tmp_path / "absent.pth", key)
    with pytest.raises(UserError, match="pass --key"):
        weights.import_file(bad)  # name and hash match nothing


def test_import_infers_the_key_from_the_hash(tmp_cache: Path, tiny: tuple[str, Path]) -> None:
    key, src = tiny
    dst = weights.import_file(src)
    assert dst == weights.weight_path(key) and dst.read_bytes() == src.read_bytes()


def test_fetch_downloads_and_checks_the_prefix(tmp_cache: Path, tiny: tuple[str, Path], monkeypatch) -> None:
    key, src = tiny
    dst = weights.fetch(key, progress=False)  # file:// URL through torch.hub.download_url_to_file
    assert dst.read_bytes() == src.read_bytes()
    monkeypatch.setitem(WEIGHTS, key, WeightFile(**{**WEIGHTS[key].__dict__, "sha256_prefix": "00000000"}))
    with pytest.raises(UserError, match="weights import"):
        weights.fetch(key, force=True, progress=False)


def test_random_weights_are_seeded_loadable_and_never_overwrite(tmp_cache: Path) -> None:
    tv = ensure_torchvision()
    path = weights.write_random_weights("alexnet", seed=5)
    state = torch.load(path, weights_only=True)
    tv.models.alexnet(weights=None).load_state_dict(state)  # strict: same keys and shapes
    with pytest.raises(UserError, match="refusing"):
        weights.write_random_weights("alexnet", seed=5)
    path.unlink()
    again = torch.load(weights.write_random_weights("alexnet", seed=5), weights_only=True)
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert weights.status(["alexnet"])[0]["hash_ok"] is False  # random weights are not the published file


def test_weights_cli(tmp_cache: Path, tiny: tuple[str, Path]) -> None:
    key, src = tiny
    runner = CliRunner()
    res = runner.invoke(weights_app, ["status", "--csv"])
    assert res.exit_code == 0, res.output
    header, *lines = res.output.strip().splitlines()
    assert header.startswith("key,filename,path,present")
    assert any(line.startswith("vgg16,") and ",False," in line for line in lines)
    res = runner.invoke(weights_app, ["import", str(src), "--key", key])
    assert res.exit_code == 0 and "imported" in res.output
    assert weights.is_present(key)
    res = runner.invoke(weights_app, ["status"])
    assert res.exit_code == 0 and "MISSING" in res.output and "ldct-bench weights fetch" in res.output
