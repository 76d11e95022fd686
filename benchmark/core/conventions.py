"""The one place where the suite's image conventions are defined.

* **HU windows** (display / metric windows): a window ``(lo, hi)`` in HU. Metrics clip an image in HU
  to the window and scale it to [0, 1] with ``data_range = 1`` (:func:`window_to_unit`); figures use
  the same windows. The default is the abdomen soft-tissue window [−160, 240] HU (level 40, width 400).
* **Network normalisation**: networks and training losses see ``(HU + 1024) / 4096``, so air
  (−1000 HU) ≈ 0.006, water 0.25, dense bone (1500 HU) ≈ 0.62; nothing is clipped, so no information
  is lost and :func:`net_to_hu` inverts it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from benchmark.core.errors import UserError


@dataclass(frozen=True)
class HUWindow:
    """A display window in HU; ``level``/``width`` follow the radiology convention."""

    name: str
    lo: float
    hi: float

    @property
    def level(self) -> float:
        return (self.lo + self.hi) / 2

    @property
    def width(self) -> float:
        return self.hi - self.lo


WINDOWS: dict[str, HUWindow] = {
    "abdomen": HUWindow("abdomen", -160.0, 240.0),  # L40 W400: the study default
    "liver": HUWindow("liver", -25.0, 125.0),  # L50 W150
    "chest": HUWindow("chest", -1350.0, 150.0),  # lung window L-600 W1500
    "mediastinum": HUWindow("mediastinum", -125.0, 225.0),  # L50 W350
    "head": HUWindow("head", 0.0, 80.0),  # brain L40 W80
    "bone": HUWindow("bone", -450.0, 1050.0),  # L300 W1500
}
DEFAULT_WINDOW = WINDOWS["abdomen"]

# Network normalisation (see module docstring).
NET_OFFSET_HU = 1024.0
NET_SCALE_HU = 4096.0


def parse_window(spec: str | tuple[float, float] | list[float] | HUWindow | None) -> HUWindow:
    """Accept a preset name (``"abdomen"``), ``"lo,hi"``, a pair, or an :class:`HUWindow`."""
    if spec is None:
        return DEFAULT_WINDOW
    if isinstance(spec, HUWindow):
        return spec
    if isinstance(spec, str):
        if spec in WINDOWS:
            return WINDOWS[spec]
        parts = spec.split(",")
        if len(parts) != 2:
            raise UserError(
                f"{spec!r} is neither a window preset ({', '.join(WINDOWS)}) nor 'lo,hi' in HU", field="window"
            )
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise UserError(f"{spec!r}: 'lo,hi' must be two numbers in HU", field="window") from None
    else:
        if len(spec) != 2:
            raise UserError(f"{spec!r}: a window is two numbers [lo, hi] in HU", field="window")
        lo, hi = float(spec[0]), float(spec[1])
    if not hi > lo:
        raise UserError(f"[{lo}, {hi}]: the upper bound must exceed the lower", field="window")
    return HUWindow(f"{lo:g},{hi:g}", lo, hi)


def window_to_unit(hu, window: HUWindow | str | tuple[float, float] | None = None):
    """Clip HU to the window and scale to [0, 1] (``data_range = 1``). numpy or torch in, same out."""
    w = parse_window(window)
    if isinstance(hu, torch.Tensor):
        return ((hu.clamp(w.lo, w.hi) - w.lo) / w.width).to(hu.dtype if hu.is_floating_point() else torch.float32)
    arr = np.asarray(hu, dtype=np.float32)
    return ((np.clip(arr, w.lo, w.hi) - w.lo) / w.width).astype(np.float32)


def hu_to_net(hu):
    """HU → network space ``(HU + 1024) / 4096`` (numpy or torch)."""
    return (hu + NET_OFFSET_HU) / NET_SCALE_HU


def net_to_hu(x):
    """Network space → HU; the exact inverse of :func:`hu_to_net`."""
    return x * NET_SCALE_HU - NET_OFFSET_HU
