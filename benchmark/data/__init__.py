"""Datasets: the registry ``DATASETS`` maps the ``dataset.kind`` names of the matrix YAML to classes."""

from __future__ import annotations

from typing import Any

from benchmark.data.base import SPLITS, Dataset, DatasetOptions, PairedSlices, Split
from benchmark.data.dicom import DicomPairsDataset
from benchmark.data.mayo import Mayo2016Dataset
from benchmark.data.synth import SynthDataset
from benchmark.registry import lookup

# The one place where dataset kinds are registered.
DATASETS: dict[str, type[Dataset]] = {
    "synth": SynthDataset,
    "mayo2016": Mayo2016Dataset,
    "dicom_pairs": DicomPairsDataset,
}


def open_dataset(kind: str, options: dict[str, Any] | None = None) -> Dataset:
    """Instantiate a registered dataset from its YAML options (validated; nothing is built yet)."""
    cls = lookup(DATASETS, kind, "dataset", field="dataset.kind")
    return cls.from_options(options)


__all__ = ["DATASETS", "SPLITS", "Dataset", "DatasetOptions", "PairedSlices", "Split", "open_dataset"]
