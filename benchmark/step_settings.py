"""The settings of one training step, passed down explicitly: :class:`StepSettings`.

The runner builds one from the matrix's ``training`` section (:func:`benchmark.runner.step_settings`)
and hands it to :func:`benchmark.train.train_epoch` and to the scheme's methods that need it
(:meth:`benchmark.schemes.base.Scheme.step`, ``update``, ``to``). Nothing reads these settings back
out of a scheme. The meaning of each field is documented on
:class:`benchmark.config.TrainingConfig`, whose fields of the same names they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.core.precision import PRECISIONS


@dataclass(frozen=True)
class StepSettings:
    """How the training loop runs a step (``training.<field>`` of the matrix, same names).

    * ``precision``: ``fp32``, ``tf32`` (the epoch's float32 matmul setting) or ``bf16`` (the step's
      forward pass and loss under autocast); applied by ``train_epoch``.
    * ``channels_last``: networks (``Scheme.to``) and batches (``train_epoch``) in channels-last layout.
    * ``grad_clip``: max global gradient norm of the generator's optimizer step; None: no clipping.
      Discriminator and critic updates are not clipped.
    * ``check_every``: the summed losses are read back and checked every N optimizer steps; with
      N > 1 the scheme's updates skip their own finite check (a host synchronisation each).

    The defaults are a plain fp32 step, unclipped, checked at every update: what a direct call of a
    scheme's step (a test, a benchmark) gets. The runner sets every field from the matrix.
    """

    precision: str = "fp32"
    channels_last: bool = False
    grad_clip: float | None = None
    check_every: int = 1

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if isinstance(self.check_every, bool) or not isinstance(self.check_every, int) or self.check_every < 1:
            raise ValueError(f"check_every must be a positive int, got {self.check_every!r}")

    @property
    def defer_checks(self) -> bool:
        """Whether a scheme's update skips its own finite check (the loop checks the sums instead)."""
        return self.check_every > 1
