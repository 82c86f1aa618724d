"""LIDC-IDRI reading files (``069.xml`` and the like) as typed records.

An LIDC XML file (root ``LidcReadMessage``, namespace ``http://www.nih.gov``) holds one
``readingSession`` per radiologist. Each session lists:

- ``unblindedReadNodule``: a nodule mark with its ROI contours, one per slice, and, for nodules
  of 3 mm or more, the 8 rated characteristics (subtlety ... malignancy). Nodules under 3 mm
  have no characteristics and a single-point "contour" (their centre).
- ``nonNodule``: a point the reader judged not to be a nodule; kept apart from nodules.

Contour points are pixel coordinates of the DICOM image: ``x`` is the column, ``y`` the row.
Turning marks into masks on a scan's grid and grouping the readers' marks into physical nodules
is :mod:`medcad.io.lidc_nodules`' job.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from medcad.errors import InputError

__all__ = [
    "Characteristics", "RoiContour", "ReaderNodule", "NonNodule", "ReadingSession", "LidcRead",
    "read_lidc_xml", "find_lidc_xml",
]

ROOT_TAG = "LidcReadMessage"


@dataclass(frozen=True)
class Characteristics:
    """A reader's ratings of one nodule (LIDC scales; higher malignancy = more suspicious).

    Attributes:
        subtlety: 1 (extremely subtle) to 5 (obvious).
        internal_structure: 1 soft tissue, 2 fluid, 3 fat, 4 air.
        calcification: 1 popcorn, 2 laminated, 3 solid, 4 non-central, 5 central, 6 absent.
        sphericity: 1 linear to 5 round.
        margin: 1 poorly defined to 5 sharp.
        lobulation: 1 none to 5 marked.
        spiculation: 1 none to 5 marked.
        texture: 1 non-solid (ground glass) to 5 solid.
        malignancy: 1 highly unlikely to 5 highly suspicious.
    """

    subtlety: int
    internal_structure: int
    calcification: int
    sphericity: int
    margin: int
    lobulation: int
    spiculation: int
    texture: int
    malignancy: int


#: Field -> (XML element name, lowest, highest allowed rating).
_CHARACTERISTIC_SCALES = {
    "subtlety": ("subtlety", 1, 5),
    "internal_structure": ("internalStructure", 1, 4),
    "calcification": ("calcification", 1, 6),
    "sphericity": ("sphericity", 1, 5),
    "margin": ("margin", 1, 5),
    "lobulation": ("lobulation", 1, 5),
    "spiculation": ("spiculation", 1, 5),
    "texture": ("texture", 1, 5),
    "malignancy": ("malignancy", 1, 5),
}
assert list(_CHARACTERISTIC_SCALES) == [f.name for f in fields(Characteristics)]


@dataclass(frozen=True, eq=False)
class RoiContour:
    """One slice's outline of a nodule mark.

    Attributes:
        z_mm: ``imageZposition``, the world z (mm) of the slice.
        sop_uid: ``imageSOP_UID`` of the slice's DICOM image, when given.
        inclusion: False for an exclusion contour (a hole inside the nodule).
        edge_xy: (N, 2) int pixel coordinates (column x, row y) of the outline, in drawing order;
            one point for a nodule under 3 mm.
    """

    z_mm: float
    sop_uid: str | None
    inclusion: bool
    edge_xy: np.ndarray

    def __post_init__(self) -> None:
        edge = np.asarray(self.edge_xy, dtype=np.int64).reshape(-1, 2)
        edge.setflags(write=False)
        object.__setattr__(self, "edge_xy", edge)


@dataclass(frozen=True)
class ReaderNodule:
    """One reader's mark of one nodule.

    Attributes:
        session_index: which ``readingSession`` (0-based, file order): one reader each.
        reader_id: ``servicingRadiologistID`` (anonymised; may be empty).
        nodule_id: ``noduleID``, unique within the session only.
        characteristics: the 8 ratings; None for nodules under 3 mm, which have none.
        contours: the ROI outlines, in file order.
    """

    session_index: int
    reader_id: str
    nodule_id: str
    characteristics: Characteristics | None
    contours: tuple[RoiContour, ...]

    @property
    def is_small(self) -> bool:
        """True for a mark under 3 mm: every contour is a single point."""
        return all(len(c.edge_xy) == 1 for c in self.contours)


@dataclass(frozen=True)
class NonNodule:
    """A point a reader marked as not a nodule (``nonNodule``)."""

    session_index: int
    reader_id: str
    non_nodule_id: str
    z_mm: float
    sop_uid: str | None
    locus_xy: tuple[int, int]


@dataclass(frozen=True)
class ReadingSession:
    """One radiologist's reading of the scan."""

    index: int
    reader_id: str
    nodules: tuple[ReaderNodule, ...]
    non_nodules: tuple[NonNodule, ...]


@dataclass(frozen=True)
class LidcRead:
    """A whole LIDC reading file.

    Attributes:
        source: the file it was read from.
        series_uid: ``SeriesInstanceUid`` of the CT the marks belong to, when given.
        study_uid: ``StudyInstanceUID``, when given.
        sessions: the reading sessions, in file order.
    """

    source: str
    series_uid: str | None
    study_uid: str | None
    sessions: tuple[ReadingSession, ...]

    @property
    def nodules(self) -> tuple[ReaderNodule, ...]:
        """Every reader's nodule marks, session by session."""
        return tuple(n for s in self.sessions for n in s.nodules)

    @property
    def non_nodules(self) -> tuple[NonNodule, ...]:
        """Every reader's non-nodule marks, session by session."""
        return tuple(n for s in self.sessions for n in s.non_nodules)


class _Reader:
    """Namespace-aware element lookups that raise InputError naming the file and the place."""

    def __init__(self, source: Path, namespace: str):
        self.source = source
        self.prefix = f"{{{namespace}}}" if namespace else ""

    def all(self, element: ElementTree.Element, name: str) -> list[ElementTree.Element]:
        return element.findall(self.prefix + name)

    def text(self, element: ElementTree.Element, name: str, where: str, required: bool = True) -> str | None:
        child = element.find(self.prefix + name)
        if child is None or child.text is None or not child.text.strip():
            if required:
                raise InputError(self.source, f"{where} lacks <{name}>")
            return None
        return child.text.strip()

    def number(self, element: ElementTree.Element, name: str, where: str, integer: bool = False):
        text = self.text(element, name, where)
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not np.isfinite(value) or (integer and not value.is_integer()):
            kind = "an integer" if integer else "a number"
            raise InputError(self.source, f"{where}: <{name}> is not {kind} ({text!r})")
        return int(value) if integer else value

    def characteristics(self, nodule: ElementTree.Element, where: str) -> Characteristics | None:
        element = nodule.find(self.prefix + "characteristics")
        if element is None or len(element) == 0:
            return None
        values = {}
        for field_name, (tag, low, high) in _CHARACTERISTIC_SCALES.items():
            value = self.number(element, tag, f"{where} characteristics", integer=True)
            if not low <= value <= high:
                raise InputError(self.source, f"{where}: {tag} is {value}, outside {low}..{high}")
            values[field_name] = value
        return Characteristics(**values)

    def point(self, element: ElementTree.Element, where: str) -> tuple[int, int]:
        return (self.number(element, "xCoord", where, integer=True),
                self.number(element, "yCoord", where, integer=True))

    def contour(self, roi: ElementTree.Element, where: str) -> RoiContour:
        inclusion = self.text(roi, "inclusion", where).upper()
        if inclusion not in ("TRUE", "FALSE"):
            raise InputError(self.source, f"{where}: <inclusion> must be TRUE or FALSE, got {inclusion!r}")
        edges = self.all(roi, "edgeMap")
        if not edges:
            raise InputError(self.source, f"{where} has no <edgeMap> points")
        return RoiContour(
            z_mm=self.number(roi, "imageZposition", where),
            sop_uid=self.text(roi, "imageSOP_UID", where, required=False),
            inclusion=inclusion == "TRUE",
            edge_xy=np.array([self.point(e, f"{where} edgeMap") for e in edges]),
        )

    def session(self, element: ElementTree.Element, index: int) -> ReadingSession:
        reader_id = self.text(element, "servicingRadiologistID", f"readingSession {index + 1}", required=False) or ""
        nodules = []
        for number, nodule in enumerate(self.all(element, "unblindedReadNodule"), start=1):
            where = f"readingSession {index + 1}, unblindedReadNodule {number}"
            nodule_id = self.text(nodule, "noduleID", where)
            where = f"readingSession {index + 1}, nodule {nodule_id!r}"
            rois = self.all(nodule, "roi")
            if not rois:
                raise InputError(self.source, f"{where} has no <roi>")
            contours = tuple(self.contour(roi, f"{where} roi {k + 1}") for k, roi in enumerate(rois))
            nodules.append(ReaderNodule(index, reader_id, nodule_id, self.characteristics(nodule, where), contours))
        non_nodules = []
        for number, mark in enumerate(self.all(element, "nonNodule"), start=1):
            where = f"readingSession {index + 1}, nonNodule {number}"
            locus = mark.find(self.prefix + "locus")
            if locus is None:
                raise InputError(self.source, f"{where} lacks <locus>")
            non_nodules.append(NonNodule(
                session_index=index, reader_id=reader_id,
                non_nodule_id=self.text(mark, "nonNoduleID", where),
                z_mm=self.number(mark, "imageZposition", where),
                sop_uid=self.text(mark, "imageSOP_UID", where, required=False),
                locus_xy=self.point(locus, f"{where} locus"),
            ))
        return ReadingSession(index, reader_id, tuple(nodules), tuple(non_nodules))


def _split_tag(tag: str) -> tuple[str, str]:
    """'{namespace}name' -> (namespace, name); a tag without namespace gives ('', name)."""
    if tag.startswith("{"):
        namespace, _, name = tag[1:].partition("}")
        return namespace, name
    return "", tag


def read_lidc_xml(path: str | Path) -> LidcRead:
    """Reads an LIDC reading file into typed records.

    Raises:
        InputError: the file is missing, not well-formed XML, not an LIDC reading file, or a
            nodule lacks a required field (noduleID, roi, imageZposition, inclusion, edge points,
            a characteristic) or has a rating outside its scale.
    """
    source = Path(path)
    if not source.is_file():
        raise InputError(source, "LIDC reading file not found")
    try:
        root = ElementTree.parse(source).getroot()
    except ElementTree.ParseError as error:
        raise InputError(source, f"not well-formed XML ({error})") from None
    namespace, name = _split_tag(root.tag)
    if name != ROOT_TAG:
        raise InputError(source, f"not an LIDC reading file (root element <{name}>, expected <{ROOT_TAG}>)")
    reader = _Reader(source, namespace)
    header = root.find(reader.prefix + "ResponseHeader")
    series_uid = study_uid = None
    if header is not None:
        series_uid = reader.text(header, "SeriesInstanceUid", "ResponseHeader", required=False)
        study_uid = reader.text(header, "StudyInstanceUID", "ResponseHeader", required=False)
    sessions = tuple(reader.session(s, i) for i, s in enumerate(reader.all(root, "readingSession")))
    return LidcRead(str(source), series_uid, study_uid, sessions)


def find_lidc_xml(folder: str | Path, series_uid: str | None = None) -> list[Path]:
    """The LIDC reading files under a folder (any nesting), sorted by path.

    Only files whose root element is ``LidcReadMessage`` count (LIDC's chest X-ray files do not);
    with ``series_uid``, only those whose header names that series.
    """
    found = []
    for path in sorted(Path(folder).rglob("*.xml")):
        try:
            # Reading up to the root's start tag is enough to recognise the file.
            with path.open("rb") as handle:
                _, root = next(ElementTree.iterparse(handle, events=("start",)))
        except (ElementTree.ParseError, StopIteration, OSError):
            continue
        if _split_tag(root.tag)[1] != ROOT_TAG:
            continue
        if series_uid is not None and read_lidc_xml(path).series_uid != series_uid:
            continue
        found.append(path)
    return found
