"""Datasets: the registry ``DATASETS`` maps the ``dataset.kind`` names of the matrix YAML to their
metadata and class."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmark.core.registry import lookup
from benchmark.data.base import SPLITS, Dataset, DatasetOptions, PairedSlices, Split
from benchmark.data.dicom import DicomPairsDataset
from benchmark.data.mayo import Mayo2016Dataset
from benchmark.data.synth import SynthDataset


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset kind: its class, a one-line summary and its reference."""

    cls: type[Dataset]
    summary: str
    reference: str = ""


# The one place where dataset kinds are registered.
DATASETS: dict[str, DatasetInfo] = {
    "synth": DatasetInfo(
        SynthDataset, "simulated fan-beam LDCT of procedural abdomen/thorax/head phantoms, 12 dose × view conditions",
        "the suite's own simulation (benchmark/data/README.md)",
    ),
    "mayo2016": DatasetInfo(
        Mayo2016Dataset, "AAPM Low-Dose CT Grand Challenge 2016 (Mayo), full/quarter dose, paired by position",
        "McCollough et al., Med. Phys. 44(10), 2017",
    ),
    "dicom_pairs": DatasetInfo(
        DicomPairsDataset, "paired DICOM series <root>/<patient>/<condition>/, paired by slice position",
    ),
}


def open_dataset(kind: str, options: dict[str, Any] | None = None) -> Dataset:
    """Instantiate a registered dataset from its YAML options (validated; nothing is built yet)."""
    info = lookup(DATASETS, kind, "dataset", field="dataset.kind")
    return info.cls.from_options(options)


__all__ = ["DATASETS", "SPLITS", "Dataset", "DatasetInfo", "DatasetOptions", "PairedSlices", "Split", "open_dataset"]
