"""The phantom cohort: determinism, geometry read back from files, nodules where the tables say,
real LUNA16 statistics, vessels that look like nodules on one slice, and a labelled spine."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medcad.data.synthetic import PhantomOptions, generate_phantom, write_cohort
from medcad.data.synthetic.nodules import sample_nodule_traits
from medcad.data.synthetic.statistics import load_statistics
from medcad.io import read_scan
from medcad.io.luna import read_annotations, read_candidates, read_malignancy
from tests.conftest import shared_path

SMALL = PhantomOptions(size="small", negatives=40)


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    first = _files_of(tmp_path / "a", seed=3, scans=2)
    again = _files_of(tmp_path / "b", seed=3, scans=2)
    other = _files_of(tmp_path / "c", seed=4, scans=1)
    assert first.keys() == again.keys() and len(first) == 2 * 2 + 6
    assert all(first[name] == again[name] for name in first)
    assert first["candidates.csv"] != other["candidates.csv"]
    assert {n for n in first if n.endswith(".raw")}.isdisjoint(n for n in other if n.endswith(".raw"))


def _files_of(folder, seed, scans):
    write_cohort(folder, scans, seed, SMALL)
    return _files(folder)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Six small scans (seed 11 gives flipped and unflipped axes) written as .mhd/.raw."""
    folder = tmp_path_factory.mktemp("cohort")
    summaries = write_cohort(folder, 6, 11, SMALL)
    return folder, summaries


def test_cohort_tables_have_the_luna_columns_and_dicom_like_uids(cohort):
    folder, summaries = cohort
    uids = [s.series_uid for s in summaries]
    assert all(set(uid) <= set("0123456789.") and len(uid) <= 64 for uid in uids)
    nodules = read_annotations(folder / "annotations.csv")
    malignancy = read_malignancy(folder / "annotations_with_malignancy.csv")
    candidates = read_candidates(folder / "candidates.csv")
    assert len(nodules) == len(malignancy) == sum(s.nodules for s in summaries) > 0
    assert sum(c.is_nodule for c in candidates) == len(nodules)
    assert len(candidates) == sum(s.candidates for s in summaries)
    for record in malignancy:
        assert record.is_malignant == (sum(r >= 4 for r in record.malignancy_ratings) >= 2)
        assert all(lo < c < hi for lo, c, hi in zip(record.bbox_low_xyz, record.center_xyz, record.bbox_high_xyz))
    header = (folder / "annotations_with_malignancy.csv").read_text().splitlines()[0]
    assert header.endswith("bboxHighZ,len_mal_details")


def test_scans_read_back_with_their_geometry_and_every_nodule_centre_is_in_its_nodule(cohort):
    folder, summaries = cohort
    nodules = read_annotations(folder / "annotations.csv")
    assert {s.flipped_axes == "" for s in summaries} == {True, False}, "want flipped and unflipped scans"
    checked = 0
    compared = set()
    for index, summary in enumerate(summaries):
        scan = read_scan(summary.path)
        assert scan.series_uid == summary.series_uid and scan.shape_irc == summary.shape_irc
        if summary.flipped_axes not in compared:  # one scan per kind of flip: regenerate and compare
            compared.add(summary.flipped_axes)
            expected = generate_phantom(11, index, SMALL).scan
            np.testing.assert_allclose(scan.origin_xyz, expected.origin_xyz, atol=1e-6)
            np.testing.assert_allclose(scan.spacing_xyz, expected.spacing_xyz, atol=1e-9)
            np.testing.assert_array_equal(scan.direction, expected.direction)
            np.testing.assert_array_equal(scan.hu, np.where(expected.hu < -1500, -1000, expected.hu))  # padding -> air
        for nodule in nodules.for_series(summary.series_uid):
            irc = scan.xyz_to_irc(nodule.center_xyz, round=True)
            assert scan.geometry.contains_irc(irc)
            reach = np.ceil(8.0 / scan.spacing_xyz[::-1]).astype(int)
            around = scan.hu[tuple(slice(max(0, i - r), i + r + 1) for i, r in zip(irc, reach))]
            background = np.percentile(around, 25)
            assert background < -750, "the nodule should sit in lung"
            assert scan.hu[tuple(irc)] > background + 100, (summary.series_uid, nodule)
            checked += 1
    assert checked >= 8


def test_the_diameters_and_malignancy_follow_the_packaged_real_statistics():
    stats = load_statistics()
    traits = sample_nodule_traits(np.random.default_rng(5), stats, 500)
    diameters = np.array([t.diameter_mm for t in traits])
    assert diameters.min() >= stats.diameter_edges_mm[0] and diameters.max() <= stats.diameter_edges_mm[-1]
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score([t.is_malignant for t in traits], diameters)
    assert abs(auc - 0.919) < 0.05
    malignant = [t for t in traits if t.is_malignant]
    benign = [t for t in traits if not t.is_malignant]
    share = lambda group, margin: np.mean([t.margin == margin for t in group])  # noqa: E731
    assert share(malignant, "spiculated") > 2 * share(benign, "spiculated")


def test_500_generated_diameters_match_the_real_luna16_histogram():
    from scipy.stats import ks_2samp
    from sklearn.metrics import roc_auc_score

    real = read_annotations(shared_path("luna", "annotations.csv"))
    real_malignancy = read_malignancy(shared_path("luna", "annotations_with_malignancy.csv"))
    traits = sample_nodule_traits(np.random.default_rng(2024), load_statistics(), 500)
    generated = [t.diameter_mm for t in traits]
    assert ks_2samp(generated, [n.diameter_mm for n in real]).pvalue > 0.01
    real_auc = roc_auc_score([n.is_malignant for n in real_malignancy], [n.diameter_mm for n in real_malignancy])
    assert real_auc == pytest.approx(0.919, abs=0.001)
    assert abs(roc_auc_score([t.is_malignant for t in traits], generated) - real_auc) < 0.05


def _axial_blob(scan, center_xyz, threshold_hu=-500.0):
    """Equivalent diameter (mm) and peak HU of the bright blob at a point on its axial slice."""
    z, y, x = scan.xyz_to_irc(center_xyz, round=True)
    plane = scan.hu[z].astype(float)
    labels, _ = ndimage.label(plane > threshold_hu)
    if labels[y, x] == 0:
        return None
    blob = labels == labels[y, x]
    area_mm2 = blob.sum() * scan.spacing_xyz[0] * scan.spacing_xyz[1]
    return 2 * np.sqrt(area_mm2 / np.pi), plane[blob].max()


@pytest.mark.slow
def test_vessel_cross_sections_look_like_small_nodules_on_one_slice():
    vessels, nodules = [], []
    for index in range(2):
        phantom = generate_phantom(21, index, PhantomOptions(size="medium", slices=80, negatives=150, nodules=12))
        for point in phantom.negatives_xyz[phantom.negative_sources == "vessel"]:
            blob = _axial_blob(phantom.scan, point)
            if blob is not None and blob[0] < 15:
                vessels.append(blob)
        for nodule in phantom.nodules:
            if nodule.traits.diameter_mm < 8 and nodule.traits.kind == "solid" and nodule.traits.attachment == "isolated":
                blob = _axial_blob(phantom.scan, nodule.center_xyz)
                if blob is not None:
                    nodules.append(blob)
    vessels, nodules = np.array(vessels), np.array(nodules)
    assert len(vessels) > 50 and len(nodules) >= 3
    low, high = np.percentile(vessels, [5, 95], axis=0)  # (size mm, peak HU) of vessel cross-sections
    typical = np.median(nodules, axis=0)
    assert np.all((low <= typical) & (typical <= high)), (low, high, nodules)
    overlap = np.all((nodules >= low) & (nodules <= high + [0, 30]), axis=1)  # + a noise margin on HU
    assert overlap.mean() >= 0.5, (low, high, nodules)


@pytest.mark.slow
def test_abdomen_scans_hold_l3_and_the_spine_shows_in_a_projection():
    phantom = generate_phantom(5, 0, PhantomOptions(size="medium", abdomen=True, negatives=10))
    scan = phantom.scan
    levels = {level.name: level for level in phantom.vertebrae}
    assert [level.name for level in phantom.vertebrae][0] == "T1" and "L3" in levels
    z_of_slice = scan.irc_to_xyz(np.column_stack([np.arange(scan.shape_irc[0]), np.zeros((scan.shape_irc[0], 2))]))[:, 2]
    l3 = levels["L3"]
    assert z_of_slice.min() < l3.z_bottom_mm < l3.z_top_mm < z_of_slice.max()
    assert 0 <= min(l3.slice_first, l3.slice_last) and max(l3.slice_first, l3.slice_last) < scan.shape_irc[0]
    assert z_of_slice[l3.slice_first] == pytest.approx(z_of_slice[l3.slice_first:l3.slice_last + 1].min(), abs=1e-6) or \
        z_of_slice[l3.slice_first] == pytest.approx(z_of_slice[l3.slice_first:l3.slice_last + 1].max(), abs=1e-6)
    # a sagittal MIP of a slab at the midline: bright vertebral bodies, darker discs between them
    patient = phantom.patient
    spine_col = int(round(scan.xyz_to_irc([patient.spine_x_mm, 0.0, 0.0])[2]))
    half = int(10 / scan.spacing_xyz[0])
    mip = scan.hu[:, :, spine_col - half:spine_col + half].max(axis=2)  # (z, y): a sagittal slab MIP
    rows_y = scan.irc_to_xyz(np.column_stack([np.zeros((scan.shape_irc[1], 1)), np.arange(scan.shape_irc[1]),
                                              np.zeros(scan.shape_irc[1])]))[:, 1]

    def brightest(z_mm, y_mm):
        """MIP maximum at the slice nearest z, within 12 mm (front-back) of a vertebral body centre."""
        row = mip[int(np.argmin(np.abs(z_of_slice - z_mm)))]
        return row[np.abs(rows_y - y_mm) < 12].max()

    names = ["T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]
    for upper, lower in zip(names[:-1], names[1:]):
        body = patient.vertebra(upper)
        bright = brightest(body.z_center_mm, body.center_y_mm)
        gap = brightest(0.5 * (body.z_bottom_mm + patient.vertebra(lower).z_top_mm), body.center_y_mm)
        assert bright > gap + 150, (upper, bright, gap)


def test_min_nodule_size_truncates_the_real_histogram_and_clear_fraction_empties_scans():
    """Options for scan-level tasks: diameters from the real histogram above a floor (its shape
    kept there), and a share of scans without nodules; the defaults draw exactly as before."""
    stats = load_statistics()
    rng = np.random.default_rng(7)
    floor = stats.sample_diameters_mm(rng, 2000, 15.0)
    assert floor.min() >= 15.0 and floor.max() <= stats.diameter_edges_mm[-1]
    whole = stats.sample_diameters_mm(np.random.default_rng(7), 20000)
    # above the floor the truncated draw follows the whole histogram: the same share of 15-20 mm
    assert abs(np.mean(floor < 20.0) - np.mean(whole[whole >= 15.0] < 20.0)) < 0.05
    assert np.array_equal(stats.sample_diameters_mm(np.random.default_rng(3), 50),
                          stats.sample_diameters_mm(np.random.default_rng(3), 50, None))
    with pytest.raises(ValueError):
        PhantomOptions(clear_fraction=1.5)
    with pytest.raises(ValueError):
        PhantomOptions(min_nodule_mm=40.0)

    clear = [generate_phantom(8, i, PhantomOptions(size="small", negatives=5, nodules=2, clear_fraction=1.0))
             for i in range(2)]
    assert all(len(p.nodules) == 0 for p in clear)
    big = generate_phantom(8, 0, PhantomOptions(size="small", negatives=5, nodules=3, min_nodule_mm=12.0))
    assert len(big.nodules) == 3 and min(n.traits.diameter_mm for n in big.nodules) >= 12.0
    half = [len(generate_phantom(8, i, PhantomOptions(size="small", negatives=5, nodules=1, clear_fraction=0.5)).nodules)
            for i in range(8)]
    assert 0 < sum(half) < 8  # some scans with, some without (8 draws of p = 0.5; fixed seed)
