"""Nodule-CAD samples: the class-balancing sampler, the book's annotation masks, typed crop samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcad.data.nodule_samples import BalancedSampler, annotation_boxes, box_mask, ratio_fractions


def test_sampler_holds_the_ratio_and_covers_each_class():
    labels = [1] * 10 + [0] * 990
    sampler = BalancedSampler(labels, ratio_fractions(3.0), num_samples=400, seed=5)
    drawn = np.array(list(sampler))
    assert len(drawn) == 400
    positives = np.asarray(labels)[drawn] == 1
    assert positives.sum() == 100  # one positive per three negatives
    assert set(drawn[positives]) == set(range(10))  # the few positives are cycled, all used
    assert len(set(drawn[~positives])) == 300  # negatives drawn without repeats


def test_sampler_is_seeded_per_epoch_and_split_across_ranks():
    labels = [0, 1] * 50
    first = list(BalancedSampler(labels, seed=1))
    assert first == list(BalancedSampler(labels, seed=1))
    other_epoch = BalancedSampler(labels, seed=1)
    other_epoch.set_epoch(1)
    assert list(other_epoch) != first
    ranks = [BalancedSampler(labels, num_samples=101, seed=1, rank=r, world_size=2) for r in range(2)]
    parts = [list(s) for s in ranks]
    assert len(parts[0]) == len(parts[1]) == len(ranks[0]) == 51
    assert sorted(parts[0] + parts[1]) == sorted(ranks[0].epoch_indices(1).tolist())


def test_sampler_without_seed_follows_torch_generator():
    labels = [0, 1] * 20
    torch.manual_seed(7)
    a = list(BalancedSampler(labels))
    torch.manual_seed(7)
    assert list(BalancedSampler(labels)) == a


def test_sampler_refuses_a_share_for_an_empty_class():
    with pytest.raises(ValueError):
        BalancedSampler([0, 0, 0], ratio_fractions(1.0))


def test_annotation_box_grows_over_the_nodule_and_masks_by_hu():
    hu = np.full((20, 30, 30), -900, dtype=np.int16)
    hu[8:13, 10:17, 12:15] = 50  # a 5 x 7 x 3 box of tissue
    hu[10, 25, 25] = 50  # tissue elsewhere: outside every box
    (box,) = annotation_boxes(hu, np.array([[10.2, 13, 13]]))
    # the book stops at the first radius that reaches air, so the box holds one air layer per side
    assert box.start_irc == (7, 9, 11) and box.stop_irc == (14, 18, 16)
    mask = box_mask(hu, (0, 0, 0), [box])
    assert mask.sum() == 5 * 7 * 3 and not mask[10, 25, 25]
    part = box_mask(hu[10:11, 5:20, 5:20], (10, 5, 5), [box])
    assert part.sum() == 7 * 3


def test_annotation_box_keeps_the_minimum_radius_in_air():
    hu = np.full((10, 10, 10), -1000, dtype=np.int16)
    (box,) = annotation_boxes(hu, np.array([[5, 5, 5]]))
    assert box.stop_irc[0] - box.start_irc[0] == 5  # the book starts at radius 2
    assert not box_mask(hu, (0, 0, 0), [box]).any()


class _OneScanCache:
    """Just what the segmentation datasets call: ``open(uid)`` -> a CachedScan."""

    def __init__(self, scan):
        self.scan = scan

    def open(self, series_uid):
        assert series_uid == self.scan.series_uid
        return self.scan


def test_segmentation_windows_centre_on_negatives_but_masks_come_from_nodules():
    from medcad.data.cache import CachedScan
    from medcad.data.nodule_samples import CandidateRecord, SegmentationCropDataset
    from medcad.geometry import VolumeGeometry

    hu = np.full((20, 200, 200), -900, dtype=np.int16)
    hu[8:13, 28:33, 28:33] = 40      # a nodule near one corner (centre irc 10, 30, 30)
    hu[:, 168:171, 168:171] = 40     # a vessel near the other (class-0 candidate at irc 10, 169, 169)
    geometry = VolumeGeometry((20, 200, 200), np.zeros(3), np.ones(3), np.eye(3))
    cache = _OneScanCache(CachedScan("s", hu, geometry))
    nodule = CandidateRecord("s", (30.0, 30.0, 10.0), True, 5.0)
    vessel = CandidateRecord("s", (169.0, 169.0, 10.0), False)
    dataset = SegmentationCropDataset(cache, [nodule], window=64, crop=64, centres=[nodule, vessel])
    assert len(dataset) == 2
    at_nodule, at_vessel = dataset[0], dataset[1]
    assert at_nodule.mask.sum() == 25 and at_nodule.image.shape == (7, 64, 64)
    assert at_vessel.mask.sum() == 0                        # vessel voxels are not nodule voxels
    assert (at_vessel.image[3] > 0).sum() == 9              # but the window shows the vessel
    assert len(SegmentationCropDataset(cache, [nodule])) == 1  # the book: nodule windows only
