"""Writing CT slices as DICOM files, for the tests that build DICOM trees (pydicom only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_ct(path: Path, hu: np.ndarray, z: float, *, patient: str, series: str, instance: int, spacing: float,
             modality: str = "CT", intercept: float = -1024, slope: float = 1.0, signed: bool = False,
             kvp: int = 120) -> None:  # fmt: skip
    """One CT slice with the tags a Siemens scanner writes: stored = round((HU − intercept) / slope) as
    12-bit unsigned pixels (``signed`` False: values from ``intercept`` up, e.g. −2048 padding with
    intercept −2048) or 16-bit signed ones (``signed`` True, as the Mayo 2016 challenge files are);
    ImagePositionPatient centres the ``(n, n)`` image, SliceLocation is ``z``."""
    sop = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.Modality, ds.Manufacturer, ds.KVP, ds.ConvolutionKernel = modality, "SIEMENS", kvp, "B30f"
    ds.PatientID, ds.PatientName = patient, patient
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[patient])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[patient, series])
    ds.InstanceNumber = instance
    n = hu.shape[0]
    ds.ImagePositionPatient = [-(n - 1) / 2 * spacing, -(n - 1) / 2 * spacing, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation, ds.SliceThickness = z, 1.0
    ds.PixelSpacing = [spacing, spacing]
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    stored = np.round((hu - intercept) / slope)
    if signed:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = stored.astype(np.int16).tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = np.clip(stored, 0, 4095).astype(np.uint16).tobytes()
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, slope, "HU"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
