"""The image history pool of adversarial training (Shrivastava et al., "Learning from simulated and
unsupervised images through adversarial training", CVPR 2017, section 2.3), as CycleGAN uses it (Zhu
et al., ICCV 2017, section 4: a buffer of the 50 previously generated images): the discriminator sees a
mix of the generator's current and earlier outputs, which damps oscillation.

Every random number comes from the ``torch.Generator`` passed to :meth:`ImagePool.query` (never
Python's ``random`` or the global torch generator), and the stored images are part of the checkpoint
(:meth:`ImagePool.state_dict`), so a resumed run draws exactly what an uninterrupted one does.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """A buffer of at most ``size`` earlier generated images.

    :meth:`query` takes a batch ``(N, C, H, W)`` of fresh fakes and returns a batch of the same shape, image
    by image in order: while the pool holds fewer than ``size`` images, the image is stored and returned;
    once it is full, with probability ½ a uniformly chosen stored image is returned and replaced by the
    new one, otherwise the new image is returned (and the pool is unchanged). ``size = 0`` passes the
    batch through. Images are stored and returned detached (the pool is for the discriminator's step).
    """

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise ValueError(f"pool size must be >= 0, got {size}")
        self.size = int(size)
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch the discriminator sees instead of ``images`` ``(N, C, H, W)`` (any dtype/device): same
        shape, device and dtype, detached. Draws (only once the pool is full) one uniform number per
        image and, for each image swapped, one uniform index, from ``generator`` (a CPU generator)."""
        images = images.detach()
        if self.size == 0:
            return images
        if self.images and images.shape[1:] != self.images[0].shape:
            raise ValueError(f"the pool holds images of shape {tuple(self.images[0].shape)}, got a batch of "
                             f"{tuple(images.shape)}")  # fmt: skip
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=generator).item() < 0.5:
                i = int(torch.randint(0, self.size, (), generator=generator))
                out.append(self.images[i].to(device=image.device, dtype=image.dtype))
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """``{"size": int, "images": (k, C, H, W) CPU tensor}`` (``k`` stored images, ``(0,)`` when empty)."""
        stored = torch.stack([im.cpu() for im in self.images]) if self.images else torch.empty(0)
        return {"size": self.size, "images": stored}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (the stored images stay on the CPU until returned)."""
        if int(state["size"]) != self.size:
            raise ValueError(f"a pool of size {state['size']} cannot be loaded into one of size {self.size}")
        stored = state["images"]
        if len(stored) > self.size:
            raise ValueError(f"{len(stored)} stored images exceed the pool size {self.size}")
        self.images = [im.clone() for im in stored] if stored.numel() else []


__all__ = ["ImagePool"]
