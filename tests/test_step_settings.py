"""The step settings are passed down explicitly (issue #23): :class:`benchmark.step_settings.StepSettings`
is frozen, the runner builds it from the matrix's ``training`` section, a scheme's step and
``train_epoch`` use the settings they are given (never the config the scheme was built with), and no
module of the training loop or the schemes reads a step setting back out of a config object."""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import torch

from benchmark.config import TrainingConfig, load_matrix
from benchmark.runner import Runner, step_settings
from benchmark.schemes import build_scheme
from benchmark.step_settings import StepSettings
from benchmark.train import Diverged, build_state, seed_everything, train_epoch
from losses import build_loss
from models import build_model

REPO = Path(__file__).resolve().parents[1]
STEP_FIELDS = {f.name for f in dataclasses.fields(StepSettings)}
DNCNN = {"depth": 3, "channels": 4}
CPU = torch.device("cpu")

MATRIX_YAML = """\
name: step-settings
dataset: {kind: synth, options: {size: tiny}}
losses: [mse]
architectures: [{name: dncnn, kwargs: {depth: 3, channels: 4}}]
doses: [25_360]
device: cpu
training:
  epochs: 1
  precision: bf16
  channels_last: true
  grad_clip: 0.25
  check_every: 3
"""


def _batch(seed: int = 0, n: int = 2, side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, side, side, generator=g)
    return x, (x + 0.1 * torch.rand(x.shape, generator=g)).clamp(0, 1)


def _scheme(name: str = "supervised", training: TrainingConfig | None = None, **kwargs):
    torch.manual_seed(0)
    arch = ("unet", {"depth": 2, "channels": 4}) if name == "pix2pix" else ("dncnn", DNCNN)
    loss = build_loss([("mse", 1.0, {})] if name == "supervised" else [])
    if name == "pix2pix":
        kwargs = {"discriminator_kwargs": {"channels": 4}, **kwargs}
    return build_scheme(name, kwargs, model=build_model(*arch), loss=loss, training=training or TrainingConfig(),
                        rng=torch.Generator().manual_seed(0), build_network=lambda: build_model(*arch))  # fmt: skip


def _grad_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


# ---------------------------------------------------------------------------------------------- the value


def test_step_settings_are_frozen_and_validated():
    s = StepSettings()
    assert (s.precision, s.channels_last, s.grad_clip, s.check_every) == ("fp32", False, None, 1)
    assert not s.defer_checks and StepSettings(check_every=2).defer_checks
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.precision = "bf16"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.grad_clip = 1.0  # type: ignore[misc]
    assert hash(s) == hash(StepSettings())  # a value: equal settings are equal
    for bad in ({"precision": "fp16"}, {"grad_clip": 0.0}, {"check_every": 0}, {"check_every": True}):
        with pytest.raises(ValueError):
            StepSettings(**bad)  # type: ignore[arg-type]


def test_every_step_setting_is_a_training_field_of_the_same_name():
    """The settings are the matrix's ``training.<field>``: one name each, no second vocabulary."""
    assert STEP_FIELDS == {"precision", "channels_last", "grad_clip", "check_every"}
    assert STEP_FIELDS <= set(TrainingConfig.model_fields)


def test_the_runner_builds_the_settings_from_the_yaml(tmp_path):
    path = tmp_path / "matrix.yaml"
    path.write_text(MATRIX_YAML)
    matrix = load_matrix(path)
    want = StepSettings(precision="bf16", channels_last=True, grad_clip=0.25, check_every=3)
    assert step_settings(matrix.training) == want
    runner = Runner(matrix, tmp_path / "out", quiet=True)
    assert runner.settings == want  # built once, with the runner
    for f in STEP_FIELDS:  # each field from the TrainingConfig field of its name
        assert getattr(runner.settings, f) == getattr(matrix.training, f)
    assert step_settings(TrainingConfig()) == StepSettings(check_every=TrainingConfig().check_every)


# ---------------------------------------------------------------------------------------------- explicit use


def test_a_scheme_step_clips_as_its_settings_say_not_as_its_config_says():
    """The config the scheme was built with has one ``grad_clip``, the settings given to ``step``
    another: the step clips to the settings' (and only the generator's update)."""
    x, y = _batch()
    clipped = _scheme(training=TrainingConfig(grad_clip=None))
    clipped.train()
    clipped.step(x, y, StepSettings(grad_clip=1e-6))
    assert _grad_norm(clipped.model) <= 1e-6 * (1 + 1e-4)
    free = _scheme(training=TrainingConfig(grad_clip=1e-6))
    free.train()
    free.step(x, y, StepSettings())
    assert _grad_norm(free.model) > 1e-4
    # pix2pix: the generator is clipped, the discriminator is not
    p2p = _scheme("pix2pix")
    p2p.train()
    total, logs, _ = p2p.step(x, y, StepSettings(grad_clip=1e-6))
    assert math.isfinite(float(total)) and {"G_gan", "l1", "D"} <= set(logs)
    assert _grad_norm(p2p.model) <= 1e-6 * (1 + 1e-4)
    assert _grad_norm(p2p.networks["D"]) > 1e-4


def test_a_scheme_defers_its_finite_check_only_when_its_settings_say_so():
    x, y = _batch()
    x = torch.full_like(x, float("nan"))
    with pytest.raises(Diverged):
        _scheme().step(x, y, StepSettings(check_every=1))
    total, _, _ = _scheme(training=TrainingConfig(check_every=1)).step(x, y, StepSettings(check_every=4))
    assert math.isnan(float(total))  # deferred: the loop's read-back reports it


def test_to_lays_out_the_networks_as_the_settings_say():
    s = _scheme(training=TrainingConfig(channels_last=False))
    s.to(CPU, StepSettings(channels_last=True))
    conv = next(m for m in s.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_train_epoch_runs_at_the_precision_of_its_settings():
    """A state built from an fp32 config trains under bf16 autocast when the settings say bf16."""

    class Batches:
        steps = 2

        def batch(self, step, generator):
            x = torch.rand(2, 1, 12, 12, generator=generator)
            return x, x

    state = build_state(build_model("dncnn", DNCNN), build_loss([("mse", 1.0, {})]), TrainingConfig(precision="fp32"),
                        seed_everything(0), steps=Batches.steps)  # fmt: skip
    dtypes: set[torch.dtype] = set()
    conv = next(m for m in state.model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda m, i, o: dtypes.add(o.dtype))
    logs = train_epoch(state, Batches(), CPU, StepSettings(precision="bf16"))  # type: ignore[arg-type]
    assert dtypes == {torch.bfloat16} and math.isfinite(logs["train_loss"])


# ---------------------------------------------------------------------------------------------- no read-back


def _sources() -> list[Path]:
    return [REPO / "benchmark" / "train.py", *sorted((REPO / "benchmark" / "schemes").glob("*.py"))]


def _read_backs(source: str) -> list[str]:
    """``<x>.training`` attributes (a config kept on, or read back from, an object: ``self.training``,
    ``scheme.training``) and step settings read from a config (``training.precision``,
    ``<x>.training.check_every``, ...) in ``source``, as ``line: expression``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        base = node.value
        from_config = (isinstance(base, ast.Name) and base.id in ("training", "tr", "t")) or (
            isinstance(base, ast.Attribute) and base.attr == "training")  # fmt: skip
        if node.attr == "training" or (node.attr in STEP_FIELDS and from_config):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_training_loop_or_scheme_module_reads_a_step_setting_from_a_config():
    """In ``benchmark/train.py`` and ``benchmark/schemes/*.py`` nothing reads a step setting from a
    config or keeps the config on an object: the settings come as :class:`StepSettings` arguments."""
    found = [f"{path.relative_to(REPO)}:{hit}" for path in _sources() for hit in _read_backs(path.read_text())]
    assert not found, "step settings read back from a config:\n" + "\n".join(found)


def test_the_read_back_check_catches_the_old_pattern():
    """The check above fails on the code before issue #23."""
    old = "def f(scheme):\n    training = scheme.training\n    return training.precision, scheme.training.check_every\n"
    hits = {h.split(": ", 1)[1] for h in _read_backs(old)}
    assert {"scheme.training", "training.precision", "scheme.training.check_every"} <= hits
