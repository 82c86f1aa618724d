"""DICOM outputs of the nodule CAD (``medcad detect --dicom-out DIR``): a Segmentation and a TID 1500 SR.

What is written, and why:

- ``seg.dcm``: a DICOM Segmentation (BINARY), one segment per finding ("Nodule k" is finding k of
  the findings table), category SCT 49755003 "Morphologically abnormal structure", type SCT
  27925004 "Nodule", anatomic region SCT 39607008 "Lung", with the algorithm (medcad version,
  each model's sha256). It references the source CT instances and shares their frame of
  reference; each frame is one source slice (only slices where the segment has voxels), so a
  viewer (3D Slicer, OHIF) overlays it on the CT it came from.
- ``sr.dcm``: a Comprehensive 3D SR holding a TID 1500 Measurement Report: per finding one TID
  1411 volumetric group that references the segment, with its tracking identifier / UID (the
  same UID as the segment's), the centre (SCOORD3D POINT, DCM 111010 "Center"), the diameter
  (SCT 81827009, mm), volume (SCT 118565006, mm3), nodule probability (DCM 111012 "Certainty of
  Finding", unit "1") and malignancy probability (DCM 111047 "Probability of cancer", unit "1").
  The observer is the device "medcad". Readers of the SR get the findings back with
  :func:`read_sr_findings`.

Without findings no SEG is written (a Segmentation needs at least one segment) and the SR's
"Imaging Measurements" container is empty: a valid report that says the CAD ran on this series
and found nothing. ``docs/dicom_outputs.md`` explains the choice of codes.

Both files get new UIDs; of the source only the Patient and Study modules are copied (by
highdicom, as the standard requires), never private tags. Both are written to temporary names
and renamed at the end, so a failure leaves neither half-written.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medcad.errors import InputError
from medcad.findings import Finding, FindingMasks
from medcad.io.atomic import atomic_path
from medcad.io.scan import Scan

if TYPE_CHECKING:
    from pydicom import Dataset

    from medcad.pipeline.model_set import ModelIdentity

SEGMENTATION_NAME = "seg.dcm"
REPORT_NAME = "sr.dcm"
ALGORITHM_NAME = "medcad nodule CAD"
DEVICE_NAME = "medcad"
SEG_SERIES_NUMBER = 9001
SR_SERIES_NUMBER = 9002
#: Slice positions of the files and of the Scan may differ by this share of the slice spacing.
_POSITION_TOLERANCE = 0.05
#: Type 2 attributes highdicom copies from the source; a missing one becomes empty (as type 2 allows).
_TYPE2_FROM_SOURCE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                      "StudyDate", "StudyTime", "ReferringPhysicianName")
_ACQUISITION_EQUIPMENT = "109101"  # DCM "Acquisition Equipment", purpose of a contributing equipment item
_SEGMENT_COLORS = ("orange", "deepskyblue", "magenta", "yellow", "limegreen", "red", "cyan", "violet")


@dataclass(frozen=True)
class DicomResults:
    """What :func:`write_dicom_results` wrote.

    Attributes:
        segmentation_path: ``seg.dcm``, or None when there are no findings (a SEG needs a segment).
        report_path: ``sr.dcm``, the TID 1500 Comprehensive 3D SR.
    """

    segmentation_path: Path | None
    report_path: Path


@dataclass(frozen=True)
class SrFinding:
    """One finding as read back from a medcad SR (one measurement group).

    Attributes:
        tracking_id: "Nodule k".
        tracking_uid: the finding's tracking UID (the SEG segment carries the same).
        center_xyz: world mm (LPS) in the source's frame of reference.
        diameter_mm: equivalent-sphere diameter.
        volume_mm3: volume of the segmented voxels.
        nodule_prob: probability that this is a nodule.
        malignancy_prob: probability of malignancy, None when the CAD ran without that model.
        segment_number: the segment of the SEG this group references (None when none).
    """

    tracking_id: str
    tracking_uid: str
    center_xyz: tuple[float, float, float]
    diameter_mm: float
    volume_mm3: float
    nodule_prob: float
    malignancy_prob: float | None
    segment_number: int | None


def write_dicom_results(series_files: Sequence[Path], scan: Scan, findings: Sequence[Finding], masks: FindingMasks,
                        models: Sequence[ModelIdentity], out_dir: Path) -> DicomResults:
    """Writes ``out_dir/seg.dcm`` (when there are findings) and ``out_dir/sr.dcm``, both or neither.

    Args:
        series_files: the source series' files in the Scan's slice order (``series_slice_files``).
        scan: the scan the findings were found in (read from ``series_files``, not resampled).
        findings: the reported findings in table order; finding k is segment k.
        masks: their voxels, ``len(masks) == len(findings)``.
        models: the models that ran (named with their sha256 as the algorithm's parameters).
        out_dir: the output folder (created when absent).

    Raises:
        InputError: ``out_dir`` is a file or not writable, or the files do not match the scan.
    """
    if len(findings) != len(masks):
        raise ValueError(f"{len(findings)} findings but {len(masks)} masks")
    folder = _output_folder(Path(out_dir))
    sources = _read_source_headers(series_files, scan)
    version = medcad_version()
    segmentation = _segmentation(sources, findings, masks, models, version) if findings else None
    report = _report(sources, segmentation, scan, findings, masks, models, version)
    report_path, seg_path = folder / REPORT_NAME, folder / SEGMENTATION_NAME
    if segmentation is None:
        _save_all(folder, {report_path: report}, stale=[seg_path])
        return DicomResults(segmentation_path=None, report_path=report_path)
    _save_all(folder, {report_path: report, seg_path: segmentation})
    return DicomResults(segmentation_path=seg_path, report_path=report_path)


def medcad_version() -> str:
    """The installed medcad version, or "unknown"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medcad")
    except PackageNotFoundError:
        return "unknown"


# --- inputs -----------------------------------------------------------------------------------


def _output_folder(folder: Path) -> Path:
    """The output folder; InputError when it is a file or cannot be created (it is created on saving)."""
    from medcad.io.atomic import check_output_folder

    return check_output_folder(folder, "DICOM results")


def _read_source_headers(series_files: Sequence[Path], scan: Scan) -> list[Dataset]:
    """The source slices' headers (no pixel data), checked against the scan's grid."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = [Path(f) for f in series_files]
    if len(files) != scan.shape_irc[0]:
        where = files[0].parent if files else scan.source
        raise InputError(where, f"the series has {len(files)} slice files but the scan {scan.shape_irc[0]} slices "
                                "(DICOM outputs need the scan as read, not resampled)")
    datasets = []
    for index, path in enumerate(files):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError) as error:
            raise InputError(path, f"cannot read the DICOM header ({error})") from error
        _check_slice(path, ds, index, scan)
        datasets.append(_with_type2_defaults(ds))
    return datasets


def _check_slice(path: Path, ds: Dataset, index: int, scan: Scan) -> None:
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
                    "ImagePositionPatient"):
        if keyword not in ds:
            raise InputError(path, f"the slice has no {keyword}, so DICOM results cannot reference it")
    if (int(ds.Rows), int(ds.Columns)) != scan.shape_irc[1:]:
        raise InputError(path, f"the slice is {ds.Rows}x{ds.Columns} pixels but the scan {scan.shape_irc[1]}x"
                               f"{scan.shape_irc[2]}")
    position_xyz = np.array([float(v) for v in ds.ImagePositionPatient])
    expected_xyz = scan.irc_to_xyz((index, 0, 0))
    tolerance_mm = max(0.01, _POSITION_TOLERANCE * float(scan.spacing_xyz[2]))
    if np.abs(position_xyz - expected_xyz).max() > tolerance_mm:
        raise InputError(path, f"the slice sits at {np.round(position_xyz, 3).tolist()} mm but slice {index} of "
                               f"the scan at {np.round(expected_xyz, 3).tolist()} mm (another series or order?)")


def _with_type2_defaults(ds: Dataset) -> Dataset:
    """Adds the Patient / Study type 2 attributes highdicom reads, empty, when the source lacks them."""
    for keyword in _TYPE2_FROM_SOURCE:
        if keyword not in ds:
            setattr(ds, keyword, None)
    return ds


# --- the Segmentation -----------------------------------------------------------------------


def _segmentation(sources: list[Dataset], findings: Sequence[Finding], masks: FindingMasks,
                  models: Sequence[ModelIdentity], version: str):
    import highdicom as hd

    algorithm = _seg_algorithm(models, version)
    descriptions = [_segment_description(k, algorithm) for k in range(1, len(findings) + 1)]
    return _without_source_equipment(hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks.label_map(),  # label k = segment k; the masks never overlap
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        **_new_instance(SEG_SERIES_NUMBER, version),
        series_description="medcad nodule CAD segmentation",
        content_label="NODULES",
        content_description="Nodules found by the medcad nodule CAD",
        omit_empty_frames=True,
    ))


def _new_instance(series_number: int, version: str) -> dict:
    """The new series / instance and the equipment (medcad, not the scanner) of a SEG or SR."""
    import highdicom as hd

    return {"series_instance_uid": hd.UID(), "series_number": series_number, "sop_instance_uid": hd.UID(),
            "instance_number": 1, "manufacturer": DEVICE_NAME, "manufacturer_model_name": ALGORITHM_NAME,
            "software_versions": version, "device_serial_number": "none"}


def _segment_description(k: int, algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.seg.SegmentDescription(
        segment_number=k,
        segment_label=_tracking_id(k),
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=hd.UID(),
        tracking_id=_tracking_id(k),
        anatomic_regions=[codes.SCT.Lung],
        display_color=hd.color.CIELabColor.from_string(_SEGMENT_COLORS[(k - 1) % len(_SEGMENT_COLORS)]),
    )


def _tracking_id(k: int) -> str:
    """The tracking identifier and segment label of finding k (1-based)."""
    return f"Nodule {k}"


def _seg_algorithm(models: Sequence[ModelIdentity], version: str):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME,
        family=codes.DCM.ArtificialIntelligence,
        version=version[:64],
        source=f"medcad {version}"[:64],  # LO: 64 characters, too short for the hashes
        parameters={f"{m.role} model": _model_text(m) for m in models} or None,
    )


def _model_text(model: ModelIdentity) -> str:
    return f"{model.architecture} sha256 {model.sha256} source {model.source}"


# --- the Structured Report ------------------------------------------------------------------


def _report(sources: list[Dataset], segmentation, scan: Scan, findings: Sequence[Finding], masks: FindingMasks,
            models: Sequence[ModelIdentity], version: str):
    import highdicom as hd

    algorithm = hd.sr.AlgorithmIdentification(
        name=ALGORITHM_NAME, version=version, parameters=[f"{m.role} model: {_model_text(m)}" for m in models] or None,
        manufacturer=DEVICE_NAME)
    groups = [_measurement_group(k, finding, masks, scan, sources, segmentation, algorithm)
              for k, finding in enumerate(findings, start=1)]
    return _without_source_equipment(hd.sr.Comprehensive3DSR(
        evidence=[*sources, *([segmentation] if segmentation is not None else [])],
        content=_measurement_report(groups),
        **_new_instance(SR_SERIES_NUMBER, version),
        series_description="medcad nodule CAD findings",
        is_complete=True,
    ))


def _without_source_equipment(dataset):
    """Drops the source scanner highdicom lists as contributing equipment (its institution, station,
    acquisition date: more of the source than the Patient and Study modules); keeps highdicom itself."""
    items = [item for item in dataset.get("ContributingEquipmentSequence", [])
             if item.PurposeOfReferenceCodeSequence[0].CodeValue != _ACQUISITION_EQUIPMENT]
    if items:
        dataset.ContributingEquipmentSequence = items
    elif "ContributingEquipmentSequence" in dataset:
        del dataset.ContributingEquipmentSequence
    return dataset


def _observation_context():
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[ALGORITHM_NAME]),  # the same device UID on every run
        name=DEVICE_NAME, manufacturer_name=DEVICE_NAME, model_name=ALGORITHM_NAME)
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(observer_type=codes.DCM.Device,
                                                      observer_identifying_attributes=device))


def _measurement_report(groups: list):
    """The TID 1500 root container; with no groups its "Imaging Measurements" container is empty."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    procedure = codes.cid100.CTUnspecifiedBodyRegion
    if groups:
        return hd.sr.MeasurementReport(observation_context=_observation_context(), procedure_reported=procedure,
                                       imaging_measurements=groups)[0]
    # highdicom requires a group; TID 1500 does not (its groups are optional), so build the same tree by hand
    root = hd.sr.ContainerContentItem(name=codes.cid7021.ImagingMeasurementReport, template_id="1500")
    root.ContentSequence = hd.sr.ContentSequence()
    root.ContentSequence.extend(hd.sr.LanguageOfContentItemAndDescendants(hd.sr.templates.DEFAULT_LANGUAGE))
    root.ContentSequence.extend(_observation_context())
    root.ContentSequence.append(hd.sr.CodeContentItem(
        name=codes.DCM.ProcedureReported, value=procedure,
        relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD))
    root.ContentSequence.append(hd.sr.ContainerContentItem(
        name=codes.DCM.ImagingMeasurements, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    return root


def _measurement_group(k: int, finding: Finding, masks: FindingMasks, scan: Scan, sources: list[Dataset],
                       segmentation, algorithm):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    segment = segmentation.SegmentSequence[k - 1]
    volume_mm3 = len(masks.voxels[k - 1]) * float(np.prod(scan.spacing_xyz))
    from medcad.pipeline.group import equivalent_diameter_mm

    diameter_mm = finding.diameter_mm if finding.diameter_mm is not None else equivalent_diameter_mm(volume_mm3)
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=segment.TrackingUID, identifier=_tracking_id(k)),
        referenced_segment=_referenced_segment(segmentation, k, masks, sources),
        finding_type=codes.SCT.Nodule,
        finding_category=codes.SCT.MorphologicallyAbnormalStructure,
        finding_sites=[hd.sr.FindingSite(codes.SCT.Lung)],
        algorithm_id=algorithm,
        measurements=_measurements(finding, diameter_mm, volume_mm3),
    )
    group[0].ContentSequence.append(_center_item(finding.center_xyz, str(sources[0].FrameOfReferenceUID)))
    return group


def _center_item(center_xyz, frame_of_reference_uid: str):
    """The finding's centre: SCOORD3D POINT "Center" (DCM 111010) in the source's frame of reference."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.sr.Scoord3DContentItem(
        name=codes.DCM.Center, graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.array([center_xyz], dtype=np.float64), frame_of_reference_uid=frame_of_reference_uid,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def _referenced_segment(segmentation, k: int, masks: FindingMasks, sources: list[Dataset]):
    """Segment k of the SEG and the source slices it lies on (the whole series for an empty segment).

    Built from the mask rather than with ``ReferencedSegment.from_segmentation``, which fails on a
    SEG of one segment (highdicom then puts the segment number in the shared functional groups).
    """
    import highdicom as hd

    slice_indices = np.unique(masks.voxels[k - 1] // (masks.shape_irc[1] * masks.shape_irc[2]))
    if len(slice_indices) == 0:
        return hd.sr.ReferencedSegment(
            sop_class_uid=segmentation.SOPClassUID, sop_instance_uid=segmentation.SOPInstanceUID, segment_number=k,
            source_series=hd.sr.SourceSeriesForSegmentation(str(sources[0].SeriesInstanceUID)))
    return hd.sr.ReferencedSegment(
        sop_class_uid=segmentation.SOPClassUID, sop_instance_uid=segmentation.SOPInstanceUID, segment_number=k,
        source_images=[hd.sr.SourceImageForSegmentation.from_source_image(sources[int(i)]) for i in slice_indices])


def _measurements(finding: Finding, diameter_mm: float, volume_mm3: float) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    measurements = [
        hd.sr.Measurement(name=codes.SCT.Diameter, value=float(diameter_mm), unit=codes.UCUM.Millimeter),
        hd.sr.Measurement(name=codes.SCT.Volume, value=float(volume_mm3), unit=codes.UCUM.CubicMillimeter),
        hd.sr.Measurement(name=codes.DCM.CertaintyOfFinding, value=float(finding.nodule_prob),
                          unit=codes.UCUM.NoUnits),
    ]
    if finding.malignancy_prob is not None:
        measurements.append(hd.sr.Measurement(name=codes.DCM.ProbabilityOfCancer, value=float(finding.malignancy_prob),
                                              unit=codes.UCUM.NoUnits))
    return measurements


# --- writing ----------------------------------------------------------------------------------


def _save_all(folder: Path, outputs: dict, stale: Sequence[Path] = ()) -> None:
    """Saves every dataset to a temporary name, then renames them all (the SR, which references the SEG, last).

    ``stale``: files removed after the renames (an older run's SEG would not match a new SR without findings).
    """
    try:
        with contextlib.ExitStack() as stack:
            # ExitStack renames in reverse order of entry: enter the SR first so it is renamed last
            temporary = {target: stack.enter_context(atomic_path(target)) for target in outputs}
            for target, dataset in outputs.items():
                dataset.save_as(temporary[target], enforce_file_format=True)
        for path in stale:
            path.unlink(missing_ok=True)
    except OSError as error:  # the folder cannot be created or written, the disk is full, ...
        raise InputError(folder, f"cannot write the DICOM results ({error.strerror or error})") from error


# --- reading back -----------------------------------------------------------------------------


def read_sr_findings(path: Path) -> list[SrFinding]:
    """The findings of a medcad SR (``sr.dcm``), in table order.

    Raises:
        InputError: the file is missing, not a DICOM SR, or not a TID 1500 report made by medcad.
    """
    import highdicom as hd

    source = Path(path)
    if not source.is_file():
        raise InputError(source, "SR file not found")
    try:
        document = hd.sr.srread(source)
    except Exception as error:  # pydicom / highdicom raise many kinds for a file that is not an SR
        raise InputError(source, f"not a DICOM Structured Report ({type(error).__name__})") from error
    report = _medcad_report(source, document)
    if not _has_measurement_groups(report):
        return []  # the report of a scan without findings: an empty "Imaging Measurements" container
    return [_sr_finding(group) for group in report.get_volumetric_roi_measurement_groups()]


def _medcad_report(source: Path, document):
    import highdicom as hd

    content = document.content
    if len(content) != 1 or not _is_measurement_report(content[0]):
        raise InputError(source, "not a TID 1500 Measurement Report")
    if not any(item.ConceptNameCodeSequence[0].CodeValue == "121013" and item.get("TextValue") == DEVICE_NAME
               for item in content[0].ContentSequence if "ConceptNameCodeSequence" in item):
        raise InputError(source, f"not a medcad SR (no device observer \"{DEVICE_NAME}\")")
    return hd.sr.MeasurementReport.from_sequence(content)


def _has_measurement_groups(report) -> bool:
    from pydicom.sr.codedict import codes

    return any(item.name == codes.DCM.ImagingMeasurements and "ContentSequence" in item
               for item in report[0].ContentSequence)


def _is_measurement_report(item) -> bool:
    templates = item.get("ContentTemplateSequence")
    return bool(templates) and templates[0].get("TemplateIdentifier") == "1500"


def _sr_finding(group) -> SrFinding:
    from pydicom.sr.codedict import codes

    return SrFinding(
        tracking_id=str(group.tracking_identifier),
        tracking_uid=str(group.tracking_uid),
        center_xyz=_center_xyz(group),
        diameter_mm=_measurement_value(group, codes.SCT.Diameter),
        volume_mm3=_measurement_value(group, codes.SCT.Volume),
        nodule_prob=_measurement_value(group, codes.DCM.CertaintyOfFinding),
        malignancy_prob=_measurement_value(group, codes.DCM.ProbabilityOfCancer),
        segment_number=_segment_number(group),
    )


def _measurement_value(group, name) -> float | None:
    found = group.get_measurements(name=name)
    return float(found[0].value) if found else None


def _center_xyz(group) -> tuple[float, float, float]:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    for item in group[0].ContentSequence:
        if item.name == codes.DCM.Center and item.value_type == hd.sr.ValueTypeValues.SCOORD3D:
            x, y, z = (float(v) for v in np.asarray(item.value).reshape(-1)[:3])
            return (x, y, z)
    return (math.nan, math.nan, math.nan)  # not written by medcad, which always gives the centre


def _segment_number(group) -> int | None:
    segment = group.referenced_segment
    if segment is None:
        return None
    return int(segment[0].ReferencedSOPSequence[0].ReferencedSegmentNumber)
