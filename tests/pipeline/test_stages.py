"""The stage functions against the book's operations (scipy) and its crop / context rules."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage

from medcad.findings import Candidate
from medcad.geometry import VolumeGeometry
from medcad.models.store import ModelDescription
from medcad.pipeline import classify, context_batch, extract_crops, group, threshold_mask, weighted_centroids
from medcad.pipeline.backends import Predictor
from medcad.pipeline.group import equivalent_diameter_mm, voxel_components

GROUP_MODULE = importlib.import_module("medcad.pipeline.group")  # the package's `group` is the function
from tests.pipeline.helpers import CLASSIFIER_PREPROCESSING


def test_context_slices_are_clamped_at_the_volume_ends():
    hu = np.arange(5, dtype=np.int16)[:, None, None] * np.ones((1, 2, 3), dtype=np.int16)  # slice i holds i
    batch = context_batch(hu, np.array([0, 4]), 3, (-1000, 1000))
    assert batch.shape == (2, 7, 2, 3) and batch.dtype == np.float32
    assert batch[0, :, 0, 0].tolist() == [0, 0, 0, 0, 1, 2, 3]
    assert batch[1, :, 0, 0].tolist() == [1, 2, 3, 4, 4, 4, 4]


def test_context_batch_clamps_hu():
    hu = np.array([[[-3024, 3071]]], dtype=np.int16)
    assert context_batch(hu, np.array([0]), 1, (-1000, 1000))[0, 1, 0].tolist() == [-1000, 1000]


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 6), st.integers(1, 7), st.integers(1, 7)),
              elements=st.floats(0, 1, width=32)), st.integers(1, 2))
def test_threshold_and_erosion_equal_scipy(prob, iterations):
    expected = ndimage.binary_erosion(prob > 0.5, iterations=iterations)
    assert np.array_equal(threshold_mask(prob, 0.5, iterations), expected)


def random_blobs(seed: int, shape=(20, 30, 30)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = ndimage.binary_opening(rng.random(shape) > 0.6)
    hu = rng.integers(-2000, 3000, shape).astype(np.int16)
    return mask, hu


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dense_share", [1.0, 0.0])  # the sparse search, and cc3d for full masks
def test_grouping_equals_label_and_center_of_mass(seed, dense_share, monkeypatch):
    monkeypatch.setattr(GROUP_MODULE, "DENSE_SHARE", dense_share)
    mask, hu = random_blobs(seed)
    components = voxel_components(mask)
    reference, reference_count = ndimage.label(mask)
    assert components.count == reference_count > 5
    np.testing.assert_array_equal(components.labels(mask.shape), reference)  # same numbering (raster order)
    centres, voxel_counts = weighted_centroids(components, hu)
    weights = hu.astype(np.float64).clip(-1000, 1000) + 1001
    expected = np.array(ndimage.center_of_mass(weights, reference, np.arange(1, reference_count + 1)))
    np.testing.assert_allclose(centres, expected, rtol=0, atol=1e-9)
    assert voxel_counts.tolist() == np.bincount(reference.ravel())[1:].tolist()


@pytest.mark.parametrize(("connectivity", "rank"), [(6, 1), (18, 2), (26, 3)])
@pytest.mark.parametrize("dense_share", [1.0, 0.0])  # the sparse search, and cc3d for full masks
def test_components_of_every_connectivity_equal_scipy_label(connectivity, rank, dense_share, monkeypatch):
    monkeypatch.setattr(GROUP_MODULE, "DENSE_SHARE", dense_share)
    rng = np.random.default_rng(connectivity)
    mask = rng.random((9, 11, 13)) > 0.85  # sparse enough that edges and corners decide joins
    mask[0, 0, 0] = mask[-1, -1, -1] = mask[0, -1, 0] = True  # components on the volume's corners
    reference, count = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, rank))
    components = voxel_components(mask, connectivity)
    assert components.count == count > 10
    np.testing.assert_array_equal(components.labels(mask.shape), reference)


def test_a_serpentine_is_one_component(monkeypatch):
    """A path that turns back every row: union-find needs several rounds to join it."""
    monkeypatch.setattr(GROUP_MODULE, "DENSE_SHARE", 1.0)  # the sparse search
    mask = np.zeros((1, 15, 15), dtype=bool)
    mask[0, ::2, :] = True
    mask[0, 1::4, -1] = mask[0, 3::4, 0] = True
    mask[0, 4, 3:9] = False  # ... and one cut: two components
    components = voxel_components(mask)
    reference, count = ndimage.label(mask)
    assert components.count == count == 2
    np.testing.assert_array_equal(components.labels(mask.shape), reference)


def test_an_empty_mask_has_no_components():
    components = voxel_components(np.zeros((3, 4, 5), dtype=bool))
    assert components.count == 0 and components.flat_index.size == 0
    with pytest.raises(ValueError, match="connectivity"):
        voxel_components(np.ones((2, 2, 2), dtype=bool), connectivity=4)


def test_candidates_carry_world_centres_and_sizes():
    mask = np.zeros((6, 8, 9), dtype=bool)
    mask[2:4, 3:5, 4:6] = True  # 8 voxels, centre (2.5, 3.5, 4.5) with equal weights
    hu = np.full(mask.shape, 100, dtype=np.int16)
    geometry = VolumeGeometry(mask.shape, (10.0, -20.0, 30.0), (0.5, 0.75, 2.0), np.diag([-1.0, 1.0, 1.0]))
    (candidate,) = group(mask, hu, geometry, series_uid="1.2")
    assert candidate.center_irc == (2.5, 3.5, 4.5)
    assert candidate.center_xyz == pytest.approx((10.0 - 4.5 * 0.5, -20.0 + 3.5 * 0.75, 30.0 + 2.5 * 2.0))
    assert candidate.voxel_count == 8 and candidate.series_uid == "1.2"
    volume = 8 * 0.5 * 0.75 * 2.0
    assert candidate.diameter_mm == pytest.approx((6 * volume / np.pi) ** (1 / 3))
    assert equivalent_diameter_mm(4 / 3 * np.pi) == pytest.approx(2.0)


def test_no_mask_no_candidates():
    geometry = VolumeGeometry((3, 4, 4), (0, 0, 0), (1, 1, 1), np.eye(3))
    assert group(np.zeros((3, 4, 4), bool), np.zeros((3, 4, 4), np.int16), geometry) == []


def test_crops_shift_inside_the_volume_as_the_book():
    z, y, x = np.indices((100, 200, 200), dtype=np.int64)
    hu = z * 1_000_000 + y * 1_000 + x  # every voxel holds its own index
    centres = [(50.4, 100.6, 99.5), (3.0, 5.0, 190.0), (99.0, 199.0, 0.0)]
    crops = extract_crops(hu, centres, (32, 48, 48), (-1e12, 1e12))
    starts = [(int(v) // 1_000_000, int(v) // 1_000 % 1_000, int(v) % 1_000) for v in crops[:, 0, 0, 0, 0]]
    # start = rounded centre - half the crop (rint(99.5) = 100, ties to even), shifted inside the volume
    assert starts == [(34, 77, 76), (0, 0, 152), (68, 152, 0)]


def test_crops_of_a_short_scan_are_filled_with_air():
    hu = np.full((5, 60, 60), 300, dtype=np.int16)
    crops = extract_crops(hu, [(2.0, 30.0, 30.0)], (32, 48, 48), (-1000, 1000))
    assert crops.shape == (1, 1, 32, 48, 48)
    assert np.all(crops[0, 0, :5] == 300) and np.all(crops[0, 0, 5:] == -1000)


class MeanPredictor(Predictor):
    """Logits (0, mean HU / 1000 + shift): records the batches it saw."""

    def __init__(self, shift: float):
        self.description = ModelDescription("fake", {}, CLASSIFIER_PREPROCESSING)
        self.shift, self.batches = shift, []

    def __call__(self, batch):
        self.batches.append(batch.shape[0])
        mean = batch.reshape(len(batch), -1).mean(axis=1) / 1000 + self.shift
        return np.stack([np.zeros_like(mean), mean], axis=1)


def test_classify_scores_each_candidate_with_each_model():
    hu = np.full((40, 60, 60), -1000, dtype=np.int16)
    hu[:20] = 1000
    candidates = [Candidate(None, (z, 30.0, 30.0), (0, 0, 0), 1, 1.0) for z in (5.0, 35.0, 20.0)]
    nodule, malignancy = MeanPredictor(0.0), MeanPredictor(1.0)
    progress = []
    probs = classify(hu, candidates, [nodule, malignancy], batch_size=2, progress=lambda d, t: progress.append((d, t)))
    crops = extract_crops(hu, [c.center_irc for c in candidates], (32, 48, 48), (-1000, 1000))
    means = crops.reshape(3, -1).mean(axis=1) / 1000
    np.testing.assert_allclose(probs[0], 1 / (1 + np.exp(-means)), rtol=1e-6)
    np.testing.assert_allclose(probs[1], 1 / (1 + np.exp(-(means + 1))), rtol=1e-6)
    assert nodule.batches == malignancy.batches == [2, 1]
    assert progress[-1] == (3, 3)


def test_mirror_views_average_the_eight_flipped_crops():
    from medcad.pipeline.classify import MIRROR_AXES

    class CornerPredictor(MeanPredictor):
        """Logit from one corner voxel: each mirror image shows it another corner."""

        def __call__(self, batch):
            self.batches.append(batch.shape[0])
            corner = batch[:, 0, 0, 0, 0] / 1000
            return np.stack([np.zeros_like(corner), corner], axis=1)

    rng = np.random.default_rng(0)
    hu = rng.integers(-1000, 1000, size=(40, 60, 60)).astype(np.int16)
    candidates = [Candidate(None, (z, 30.0, 29.0), (0, 0, 0), 1, 1.0) for z in (16.0, 20.0)]
    predictor = CornerPredictor(0.0)
    plain = classify(hu, candidates, [predictor])[0]
    mirrored = classify(hu, candidates, [predictor], mirror_views=True)[0]
    crops = extract_crops(hu, [c.center_irc for c in candidates], (32, 48, 48), (-1000, 1000))[:, 0]
    corners = np.stack([crops[:, z, y, x] for z in (0, -1) for y in (0, -1) for x in (0, -1)], axis=1) / 1000
    assert len(MIRROR_AXES) == 8 and len(set(MIRROR_AXES)) == 8
    np.testing.assert_allclose(plain, 1 / (1 + np.exp(-corners[:, 0])), rtol=1e-6)
    np.testing.assert_allclose(mirrored, (1 / (1 + np.exp(-corners))).mean(axis=1), rtol=1e-6)
    assert not np.allclose(plain, mirrored)
    assert predictor.batches == [2] + [2] * 8


def test_erosion_modes_shrink_along_their_axes_only():
    from medcad.pipeline.segment import erode, erosion_axes

    mask = np.zeros((5, 7, 7), dtype=bool)
    mask[2, 1:6, 1:6] = True  # a one-slice 5 x 5 plate
    assert not erode(mask, 1, erosion_axes("3d")).any()  # the book's cross: one slice thick -> gone
    in_plane = erode(mask, 1, erosion_axes("2d"))
    assert in_plane.sum() == 9 and in_plane[2, 2:5, 2:5].all()  # 5 x 5 -> 3 x 3, the slice kept
    assert erode(mask, 1, erosion_axes("none")) is mask
    assert np.array_equal(erode(mask, 1, erosion_axes("3d")), ndimage.binary_erosion(mask))
    with pytest.raises(Exception, match="unknown erosion"):
        erosion_axes("4d")


class CentreSlicePredictor(Predictor):
    """A fake segmenter: probability = (clamped HU of the centre slice + 1000) / 2000."""

    def __init__(self):
        self.description = ModelDescription("fake", {"depth": 1}, {"kind": "slice_context", "context_slices": 3,
                                                                   "hu_clamp": [-1000.0, 1000.0]})

    def __call__(self, batch):
        return (batch[:, 3:4] + 1000) / 2000


def test_cores_split_a_joined_component_and_keep_coreless_ones_whole():
    from medcad.pipeline.segment import segment, segment_masks

    hu = np.full((5, 16, 24), -1000, dtype=np.int16)
    hu[2, 4:7, 2:5] = 990     # a nodule, probability 0.995
    hu[2, 5, 5:12] = 100      # a vessel at 0.55 joining it to ...
    hu[2, 4:7, 12:15] = 990   # ... a second nodule
    hu[2, 12:14, 18:20] = 200  # a faint blob on its own, 0.6
    predictor = CentreSlicePredictor()
    levels = segment(hu, predictor, threshold=0.5, core_threshold=0.99)
    assert levels.dtype == np.uint8 and levels[2, 5, 3] == 2 and levels[2, 5, 8] == 1 and levels[0, 0, 0] == 0
    mask, core = segment_masks(hu, predictor, 0.5, 0.99, erosion="none")
    geometry = VolumeGeometry(hu.shape, (0, 0, 0), (1, 1, 1), np.eye(3))
    assert len(group(mask, hu, geometry)) == 2  # the book's grouping: the joined pair and the blob
    split = group(mask, hu, geometry, core=core)
    assert [c.center_irc for c in split] == [(2.0, 5.0, 3.0), (2.0, 5.0, 13.0), (2.0, 12.5, 18.5)]
    assert [c.voxel_count for c in split] == [9, 9, 4]
    unsplit, none = segment_masks(hu, predictor, 0.5, None, erosion="none")
    assert none is None and np.array_equal(unsplit, mask)
    with pytest.raises(Exception, match=r"core threshold must lie in \[0.5, 1\)"):
        segment_masks(hu, predictor, 0.5, 0.3)


class ContextMeanSegmenter(Predictor):
    """Probability = sigmoid(mean of the 7 context channels / 100), pixel by pixel; records the input shapes."""

    def __init__(self):
        from tests.pipeline.helpers import SEGMENTER_PREPROCESSING

        self.description = ModelDescription("fake", {"depth": 3}, SEGMENTER_PREPROCESSING)
        self.shapes = []

    def __call__(self, batch):
        self.shapes.append(batch.shape)
        return 1 / (1 + np.exp(-batch.mean(axis=1, keepdims=True) / 100))


def test_segment_in_a_region_matches_the_whole_scan_there_and_leaves_the_rest_empty():
    from medcad.pipeline.segment import SliceWindows, segment
    from medcad.transforms.spatial import BoxIrc

    rng = np.random.default_rng(1)
    hu = rng.integers(-1000, 1000, size=(12, 30, 26)).astype(np.int16)
    box = BoxIrc((2, 5, 3), (9, 23, 20))
    whole = segment(hu, ContextMeanSegmenter())
    predictor = ContextMeanSegmenter()
    progress = []
    inside = segment(hu, predictor, region=SliceWindows.box(box, 12),
                     progress=lambda done, total: progress.append((done, total)))
    np.testing.assert_array_equal(inside[box.slices], whole[box.slices])  # context slices from the whole scan
    outside = np.ones(hu.shape, dtype=bool)
    outside[box.slices] = False
    assert not inside[outside].any()
    assert len(predictor.shapes) == 7 and predictor.shapes[0][2:] == (20, 20)  # 18 x 17 padded to multiples of 4
    assert progress[-1] == (7, 7)
    levels = segment(hu, ContextMeanSegmenter(), threshold=0.5, core_threshold=0.9, region=SliceWindows.box(box, 12))
    expected = (whole[box.slices] > 0.5).astype(np.uint8) + (whole[box.slices] > 0.9)
    np.testing.assert_array_equal(levels[box.slices], expected)
    assert not levels[outside].any()


def test_windows_differ_by_slice_and_slices_without_one_are_skipped():
    from medcad.pipeline.segment import SliceWindows, segment

    rng = np.random.default_rng(3)
    hu = rng.integers(-1000, 1000, size=(6, 20, 20)).astype(np.int16)
    rows = np.array([[0, 0], [2, 10], [2, 10], [4, 18], [0, 20], [0, 0]])
    cols = np.array([[0, 0], [1, 9], [1, 9], [3, 11], [0, 20], [5, 5]])
    windows = SliceWindows(rows, cols)
    assert windows.runs.tolist() == [False, True, True, True, True, False]
    assert [chunk[0].tolist() for chunk in windows.chunks(4)] == [[1, 2], [3], [4]]  # same window: one batch
    assert windows.pixels() == 2 * 8 * 8 + 14 * 8 + 400
    whole = segment(hu, ContextMeanSegmenter())
    predictor = ContextMeanSegmenter()
    part = segment(hu, predictor, batch_size=4, region=windows)
    expected = np.zeros_like(whole)
    for index in range(6):
        window = (index, slice(*rows[index]), slice(*cols[index]))
        expected[window] = whole[window]
    np.testing.assert_array_equal(part, expected)
    assert [shape[0] for shape in predictor.shapes] == [2, 1, 1]


def test_a_region_off_the_pooling_grid_gives_the_unets_own_answer_inside():
    """A real (random) depth-2 U-Net: inside the region, away from its cut edges, bit for bit the whole-slice output."""
    import torch

    from medcad.models import create
    from medcad.pipeline.segment import SliceWindows, segment
    from medcad.transforms.spatial import BoxIrc
    from tests.pipeline.helpers import SEGMENTER_PREPROCESSING

    torch.manual_seed(0)
    model = create("nodule_unet2d", depth=2, width=4).eval()

    class UNetPredictor(Predictor):
        description = ModelDescription("nodule_unet2d", {"depth": 2, "width": 4}, SEGMENTER_PREPROCESSING)

        def __call__(self, batch):
            with torch.no_grad():
                return model(torch.from_numpy(batch)).numpy()

    rng = np.random.default_rng(2)
    hu = rng.integers(-1000, 1000, size=(6, 48, 48)).astype(np.int16)
    box = BoxIrc((1, 7, 9), (5, 48, 41))  # odd starts: off the 2-pixel pooling grid
    whole = segment(hu, UNetPredictor())
    part = segment(hu, UNetPredictor(), region=SliceWindows.box(box, 6))
    inner = (slice(1, 5), slice(7 + 12, 48), slice(9 + 12, 41 - 12))  # 12 pixels from the cut edges
    np.testing.assert_allclose(part[inner], whole[inner], rtol=0, atol=1e-6)
