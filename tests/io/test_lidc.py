"""LIDC reading files: parsing, contour masks, grouping into physical nodules, consensus."""

from __future__ import annotations

import numpy as np
import pytest

from medcad.errors import InputError
from medcad.geometry import VolumeGeometry
from medcad.io.lidc import Characteristics, find_lidc_xml, read_lidc_xml
from medcad.io.lidc_nodules import (
    combine_masks, group_nodules, mark_mask, PhysicalNodule, sop_slice_index,
)

from tests.conftest import LIDC_0001_SERIES_UID

LUNA_CENTER_XYZ = np.array([56.21, 86.34, -115.87])
LUNA_DIAMETER_MM = 23.35

# ---------------------------------------------------------------- synthetic files

NS = 'xmlns="http://www.nih.gov"'
RATINGS = ("subtlety", "internalStructure", "calcification", "sphericity", "margin", "lobulation",
           "spiculation", "texture", "malignancy")


def outline(x0: int, y0: int, x1: int, y1: int) -> list[tuple[int, int]]:
    """Every boundary pixel of the rectangle [x0, x1] x [y0, y1], in drawing order (as LIDC lists them)."""
    top = [(x, y0) for x in range(x0, x1 + 1)]
    right = [(x1, y) for y in range(y0 + 1, y1 + 1)]
    bottom = [(x, y1) for x in range(x1 - 1, x0 - 1, -1)]
    left = [(x0, y) for y in range(y1 - 1, y0, -1)]
    return top + right + bottom + left


def roi(z_mm: float, points, inclusion: bool = True, sop: str | None = None) -> str:
    edges = "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in points)
    sop_line = f"<imageSOP_UID>{sop}</imageSOP_UID>" if sop else ""
    return (f"<roi><imageZposition>{z_mm}</imageZposition>{sop_line}"
            f"<inclusion>{'TRUE' if inclusion else 'FALSE'}</inclusion>{edges}</roi>")


def nodule(nodule_id: str, rois: list[str], malignancy: int | None = None) -> str:
    characteristics = ""
    if malignancy is not None:
        values = dict.fromkeys(RATINGS, 3) | {"malignancy": malignancy}
        characteristics = "<characteristics>" + "".join(f"<{k}>{v}</{k}>" for k, v in values.items()) + "</characteristics>"
    return f"<unblindedReadNodule><noduleID>{nodule_id}</noduleID>{characteristics}{''.join(rois)}</unblindedReadNodule>"


def session(reader_id: str, nodules: list[str], extra: str = "") -> str:
    return f"<readingSession><servicingRadiologistID>{reader_id}</servicingRadiologistID>{''.join(nodules)}{extra}</readingSession>"


def lidc_file(tmp_path, sessions: list[str], namespace: str = NS, name: str = "read.xml"):
    path = tmp_path / name
    path.write_text(f'<?xml version="1.0"?><LidcReadMessage {namespace}><ResponseHeader>'
                    f"<SeriesInstanceUid>1.2.3</SeriesInstanceUid></ResponseHeader>{''.join(sessions)}</LidcReadMessage>")
    return path


#: 6 slices at z = -20, -17.5, ..., -7.5 mm; 30 x 30 pixels of 0.7 mm.
GRID = VolumeGeometry((6, 30, 30), (-10.0, -10.0, -20.0), (0.7, 0.7, 2.5), np.eye(3))


def test_synthetic_file_parses_with_and_without_namespace(tmp_path):
    body = [session("r1", [nodule("n1", [roi(-17.5, outline(2, 2, 11, 11), sop="9.9")], malignancy=4)],
                    extra="<nonNodule><nonNoduleID>x</nonNoduleID><imageZposition>-15</imageZposition>"
                          "<locus><xCoord>7</xCoord><yCoord>8</yCoord></locus></nonNodule>")]
    for namespace in (NS, ""):
        read = read_lidc_xml(lidc_file(tmp_path, body, namespace))
        assert read.series_uid == "1.2.3"
        (mark,) = read.nodules
        assert mark.characteristics == Characteristics(3, 3, 3, 3, 3, 3, 3, 3, 4)
        assert mark.contours[0].sop_uid == "9.9" and mark.contours[0].z_mm == -17.5
        assert mark.contours[0].edge_xy.shape == (36, 2)
        (non_nodule,) = read.non_nodules
        assert non_nodule.locus_xy == (7, 8) and non_nodule.z_mm == -15.0


def test_exclusion_contour_makes_a_hole(tmp_path):
    # Outer 10x10 pixels (boundary included); the exclusion ring's strict interior (2x2) is removed.
    rois = [roi(-17.5, outline(2, 2, 11, 11)), roi(-17.5, outline(5, 5, 8, 8), inclusion=False),
            roi(-15.0, outline(2, 2, 11, 11))]
    read = read_lidc_xml(lidc_file(tmp_path, [session("r1", [nodule("n1", rois)])]))
    mask = mark_mask(read.nodules[0], GRID).full()
    assert mask.shape == GRID.shape_irc
    assert mask[1].sum() == 96 and mask[2].sum() == 100 and mask.sum() == 196
    assert not mask[1, 6:8, 6:8].any() and mask[1, 5, 5] and mask[2, 6, 6]
    assert mask[1, 2, 2] and mask[1, 11, 11] and not mask[1, 12, 12]  # (row y, column x)


def test_slice_placement_follows_geometry(tmp_path):
    read = read_lidc_xml(lidc_file(tmp_path, [session("r1", [nodule("n1", [roi(-17.5, outline(2, 3, 4, 5))])])]))
    assert mark_mask(read.nodules[0], GRID).offset_irc == (1, 3, 2)
    # z running the other way: the same world z is slice 6 - 1 - 1 = 4 counted from z = -7.5.
    flipped = VolumeGeometry((6, 30, 30), (-10.0, -10.0, -7.5), (0.7, 0.7, 2.5), np.diag([1.0, 1.0, -1.0]))
    assert mark_mask(read.nodules[0], flipped).offset_irc == (4, 3, 2)
    # A SOP-UID map wins over imageZposition.
    read_sop = read_lidc_xml(lidc_file(tmp_path, [session("r1", [nodule("n1", [roi(-17.5, outline(2, 3, 4, 5), sop="1.9")])])]))
    assert mark_mask(read_sop.nodules[0], GRID, sop_index={"1.9": 5}).offset_irc == (5, 3, 2)


def test_grouping_rule_one_mark_per_reader(tmp_path):
    big_a = nodule("a-big", [roi(-17.5, outline(5, 5, 14, 14)), roi(-15.0, outline(5, 5, 14, 14))], malignancy=5)
    small_a = nodule("a-small", [roi(-10.0, [(25, 25)])])
    # Reader B splits the big nodule into two overlapping marks; its point is 1 pixel from A's.
    big_b1 = nodule("b-big1", [roi(-17.5, outline(6, 6, 15, 15))], malignancy=4)
    big_b2 = nodule("b-big2", [roi(-15.0, outline(12, 12, 16, 16))], malignancy=2)
    small_b = nodule("b-small", [roi(-10.0, [(26, 25)])])
    far_b = nodule("b-far", [roi(-10.0, [(25, 2)])])            # 16 mm from A's point: its own nodule
    read = read_lidc_xml(lidc_file(tmp_path, [session("a", [big_a, small_a]), session("b", [big_b1, big_b2, small_b, far_b])]))
    groups = group_nodules(read, GRID, tolerance_mm=2.0)

    ids = sorted(tuple(sorted(m.nodule_id for m in g.marks)) for g in groups)
    # Both B marks overlap a-big; b-big1 has the closer centroid, so it joins and b-big2 stays alone.
    assert ids == [("a-big", "b-big1"), ("a-small", "b-small"), ("b-big2",), ("b-far",)]
    for group in groups:
        sessions = [m.session_index for m in group.marks]
        assert len(set(sessions)) == len(sessions)
    big = next(g for g in groups if g.reader_count == 2 and g.malignancy_ratings)
    assert sorted(big.malignancy_ratings) == [4, 5] and big.is_malignant()
    assert not big.is_malignant(min_readers=2, min_rating=5)
    # Consensus at 100 %: the 9x9 overlap of the two squares on slice 1.
    assert big.consensus_mask(1.0).voxel_count == 81
    assert combine_masks(big.masks).voxel_count == 100 + 100 + 100 - 81
    # A tolerance below the points' 0.7 mm distance keeps them apart.
    assert len(group_nodules(read, GRID, tolerance_mm=0.5)) == 5


def test_consensus_rule_counts_readers(tmp_path):
    marks = [nodule(f"n{r}", [roi(-17.5, outline(5, 5, 9, 9))], malignancy=m) for r, m in enumerate((4, 4, 2))]
    read = read_lidc_xml(lidc_file(tmp_path, [session(str(i), [m]) for i, m in enumerate(marks)]))
    (group,) = group_nodules(read, GRID)
    assert isinstance(group, PhysicalNodule) and group.reader_count == 3
    assert group.is_malignant() and not group.is_malignant(min_readers=3)
    assert group.diameter_mm == pytest.approx((6 * 25 * 0.7 * 0.7 * 2.5 / np.pi) ** (1 / 3))


@pytest.mark.parametrize("text, problem", [
    ("<LidcReadMessage><readingSession>", "not well-formed XML"),
    ("<IdriReadMessage/>", "not an LIDC reading file"),
    (f"<LidcReadMessage {NS}>" + session("r", ["<unblindedReadNodule><roi/></unblindedReadNodule>"]) + "</LidcReadMessage>",
     "lacks <noduleID>"),
    (f"<LidcReadMessage {NS}>" + session("r", [nodule("n", [roi(-17.5, [(1, 1)])], malignancy=7)]) + "</LidcReadMessage>",
     "malignancy is 7, outside 1..5"),
    (f"<LidcReadMessage {NS}>" + session("r", [nodule("n", [roi(-17.5, [])])]) + "</LidcReadMessage>",
     "no <edgeMap> points"),
    (f"<LidcReadMessage {NS}>" + session("r", [nodule("n", [roi("abc", [(1, 1)])])]) + "</LidcReadMessage>",
     "<imageZposition> is not a number"),
])
def test_bad_files_give_input_errors(tmp_path, text, problem):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as caught:
        read_lidc_xml(path)
    assert str(path) in str(caught.value)


def test_contours_off_the_scan_give_input_errors(tmp_path):
    for z_mm, problem in ((-40.0, "outside the scan"), (-16.0, "falls between slices")):
        path = lidc_file(tmp_path, [session("r", [nodule("n", [roi(z_mm, [(3, 3)])])])], name=f"{z_mm}.xml")
        with pytest.raises(InputError, match=problem) as caught:
            group_nodules(read_lidc_xml(path), GRID)
        assert str(path) in str(caught.value)
    with pytest.raises(InputError, match="not to the scan's"):
        group_nodules(read_lidc_xml(path), GRID, series_uid="4.5.6")


def test_find_lidc_xml_skips_other_files(tmp_path):
    lidc_file(tmp_path, [], name="a.xml")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "other.xml").write_text("<IdriReadMessage/>")
    (tmp_path / "sub" / "broken.xml").write_text("<")
    assert [p.name for p in find_lidc_xml(tmp_path)] == ["a.xml"]
    assert find_lidc_xml(tmp_path, series_uid="7.7") == []


# ---------------------------------------------------------------- the real 069.xml

@pytest.fixture(scope="module")
def lidc_xml(lidc_dir):
    (path,) = find_lidc_xml(lidc_dir, series_uid=LIDC_0001_SERIES_UID)
    assert path.name == "069.xml"
    return path


def test_real_xml_parses(lidc_xml):
    read = read_lidc_xml(lidc_xml)
    assert read.series_uid == LIDC_0001_SERIES_UID
    assert [len(s.nodules) for s in read.sessions] == [4, 1, 4, 4]
    assert [len(s.non_nodules) for s in read.sessions] == [4, 1, 8, 0]
    first = read.sessions[0].nodules[0]
    assert first.nodule_id == "Nodule 001" and first.reader_id == "540461523"
    assert first.characteristics == Characteristics(5, 1, 6, 3, 3, 3, 4, 5, 5)
    assert len(first.contours) == 8 and first.contours[0].z_mm == -125.0
    assert first.contours[0].edge_xy[0].tolist() == [312, 355]
    assert first.contours[0].sop_uid == "1.3.6.1.4.1.14519.5.2.1.6279.6001.110383487652933113465768208719"
    small = [n for n in read.nodules if n.is_small]
    assert len(small) == 9 and all(n.characteristics is None for n in small)
    assert read.sessions[0].non_nodules[0].locus_xy == (396, 216)


def test_real_large_nodule_matches_luna(lidc_xml, lidc_scan, luna_dir):
    from medcad.io.luna import read_malignancy

    read = read_lidc_xml(lidc_xml)
    groups = group_nodules(read, lidc_scan.geometry, series_uid=lidc_scan.series_uid)
    (reference,) = read_malignancy(luna_dir / "annotations_with_malignancy.csv").for_series(LIDC_0001_SERIES_UID)
    large = [g for g in groups if g.malignancy_ratings]
    assert len(large) == 1
    nodule = large[0]
    assert sorted(m.session_index for m in nodule.marks) == [0, 1, 2, 3]
    assert sorted(nodule.malignancy_ratings) == sorted(reference.malignancy_ratings) == [4, 5, 5, 5]
    assert nodule.is_malignant() is reference.is_malignant is True

    consensus = nodule.consensus_mask(0.5)
    assert np.linalg.norm(consensus.centroid_xyz - LUNA_CENTER_XYZ) < 5.0
    assert np.linalg.norm(nodule.centroid_xyz - LUNA_CENTER_XYZ) < 5.0
    assert abs(nodule.diameter_mm - LUNA_DIAMETER_MM) < 0.2 * LUNA_DIAMETER_MM
    # The mask sits on the nodule: the LUNA centre is inside, and the voxels are soft tissue.
    full = consensus.full()
    assert full[tuple(lidc_scan.xyz_to_irc(LUNA_CENTER_XYZ, round=True))]
    assert lidc_scan.hu[full].mean() > -300

    # The other 9 marks are three 3-reader small nodules (< 3 mm), unrated.
    assert sorted(g.reader_count for g in groups) == [3, 3, 3, 4]
    assert all(not g.is_malignant() for g in groups if g is not nodule)


def test_real_sop_uid_and_z_placement_agree(lidc_xml, lidc_scan):
    read = read_lidc_xml(lidc_xml)
    sop_index = sop_slice_index(lidc_xml.parent, lidc_scan.geometry, LIDC_0001_SERIES_UID)
    assert len(sop_index) == lidc_scan.shape_irc[0]
    for mark in read.nodules:
        by_z, by_sop = mark_mask(mark, lidc_scan.geometry), mark_mask(mark, lidc_scan.geometry, sop_index)
        assert by_z.offset_irc == by_sop.offset_irc and np.array_equal(by_z.box, by_sop.box)
