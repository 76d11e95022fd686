"""The foundation layer: what every package of the suite may use, importing none of them.

* :mod:`~benchmark.core.errors` — :class:`UserError` (exit 2, no traceback) and unknown-name errors;
* :mod:`~benchmark.core.registry` — the one look-up and constructor of the plain-dict registries;
* :mod:`~benchmark.core.conventions` — HU windows and the network normalisation;
* :mod:`~benchmark.core.io` — atomic file writes;
* :mod:`~benchmark.core.device` — ``"auto"``/``"cpu"``/``"cuda[:N]"`` device resolution;
* :mod:`~benchmark.core.kernels` — portable CPU kernels (the same bytes on every x86-64 host);
* :mod:`~benchmark.core.paths` — where the caches live;
* :mod:`~benchmark.core.compat` — importing torchvision next to a CPU-only torch;
* :mod:`~benchmark.core.weights` — the pretrained weight-file store;
* :mod:`~benchmark.core.dicom` — the one DICOM reader and HU conversion;
* :mod:`~benchmark.core.ssim` — the one SSIM / MS-SSIM functional (the loss and the metric wrap it).

Modules here import only each other and third-party libraries; the layering contract in
``pyproject.toml`` (``lint-imports``) enforces it.
"""
