"""Writing a Scan as a DICOM CT series (one file per slice), readable by any DICOM reader.

Used to ship phantom cohorts in DICOM form and to build test series with odd geometry. Pixel
data are stored as signed 16-bit with RescaleIntercept 0 / RescaleSlope 1 (HU as stored), and
each slice gets ImagePositionPatient / ImageOrientationPatient from the scan's geometry, so a
reader that sorts by position rebuilds the same grid. UIDs derive deterministically from the
series UID, so the same scan gives byte-identical files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from medcad.io.atomic import atomic_dir_files
from medcad.io.scan import Scan

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_UID_ROOT = "1.2.826.0.1.3680043.10.1234."  # a private-looking root for generated UIDs


def derived_uid(seed_text: str) -> str:
    """A deterministic DICOM UID (digits and dots, <= 64 characters) from any text."""
    digits = str(int(hashlib.sha256(seed_text.encode()).hexdigest(), 16))
    return (_UID_ROOT + digits)[:64].rstrip(".")


def write_dicom_series(scan: Scan, folder: str | Path, series_uid: str | None = None,
                       series_description: str = "medcad") -> Path:
    """Writes ``scan`` as a CT series of ``{n:04d}.dcm`` files into ``folder`` (atomically).

    Args:
        series_uid: SeriesInstanceUID; defaults to the scan's, else one derived from its source.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    uid = series_uid or scan.series_uid or derived_uid(f"series:{scan.source}")
    study_uid = derived_uid(f"study:{uid}")
    frame_of_reference_uid = derived_uid(f"frame-of-reference:{uid}")
    hu = np.asarray(scan.hu)
    if not np.issubdtype(hu.dtype, np.integer):
        hu = np.rint(hu)
    pixels = np.clip(hu, -32768, 32767).astype(np.int16)
    row_dir = scan.direction[:, 0]  # world direction of increasing column index
    col_dir = scan.direction[:, 1]  # world direction of increasing row index
    target = Path(folder)
    with atomic_dir_files(target) as tmp:
        for index in range(pixels.shape[0]):
            position = scan.irc_to_xyz((index, 0, 0))
            sop_uid = derived_uid(f"sop:{uid}:{index}")
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = derived_uid("medcad-implementation")
            ds = FileDataset(str(tmp / f"{index:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID = CT_IMAGE_STORAGE
            ds.SOPInstanceUID = sop_uid
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = uid
            ds.FrameOfReferenceUID = frame_of_reference_uid  # CT images must have one; DICOM results reference it
            ds.PositionReferenceIndicator = ""
            ds.Modality = "CT"
            ds.SeriesDescription = series_description
            ds.PatientID = "PHANTOM"
            ds.InstanceNumber = index + 1
            ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
            ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
            ds.PixelSpacing = [f"{scan.spacing_xyz[1]:.6f}", f"{scan.spacing_xyz[0]:.6f}"]
            ds.SliceThickness = f"{scan.spacing_xyz[2]:.6f}"
            ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[2]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = "0"
            ds.RescaleSlope = "1"
            ds.PixelData = np.ascontiguousarray(pixels[index]).tobytes()
            pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
    return target
