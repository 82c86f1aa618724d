"""Building blocks of the phantom: interpolation, tube painting, flipped layouts, trees, noise."""

from __future__ import annotations

import numpy as np
import pytest

from medcad.data.synthetic.canvas import Canvas, coarse_shape, upsample_linear
from medcad.data.synthetic.layout import ScanLayout
from medcad.data.synthetic.noise import noise_sigma_hu, quantise_with_noise
from medcad.data.synthetic.trees import grow_tree
from medcad.geometry import VolumeGeometry


def test_upsampling_reproduces_a_linear_field_slab_by_slab():
    shape, factors = (23, 17, 30), (2, 3, 4)
    grid = np.stack(np.meshgrid(*[np.arange(n) * f for n, f in zip(coarse_shape(shape, factors), factors)],
                                indexing="ij"))
    coarse = (0.5 * grid[0] - 2.0 * grid[1] + 3.0 * grid[2] + 7).astype(np.float32)
    fine = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    expected = 0.5 * fine[0] - 2.0 * fine[1] + 3.0 * fine[2] + 7
    whole = upsample_linear(coarse, factors, shape)
    np.testing.assert_allclose(whole, expected, atol=1e-3)
    pieces = np.concatenate([upsample_linear(coarse, factors, shape, a, min(a + 5, 23)) for a in range(0, 23, 5)])
    np.testing.assert_array_equal(pieces, whole)


def test_tubes_have_their_volume_and_joined_pieces_do_not_double_paint():
    spacing = np.array([0.5, 0.5, 0.8])
    canvas = Canvas.filled((80, 80, 120), (0, 0, 0), spacing, 0.0)
    start, end, radius = np.array([8.0, 20.0, 30.0]), np.array([52.0, 20.0, 34.0]), 4.0
    canvas.paint_capsules([start], [end], radius, radius, 1.0, "max")
    length = np.linalg.norm(end - start)
    volume = np.pi * radius ** 2 * length + 4 / 3 * np.pi * radius ** 3
    assert canvas.hu.sum() * np.prod(spacing) == pytest.approx(volume, rel=0.03)
    halves = Canvas.filled(canvas.hu.shape, (0, 0, 0), spacing, 0.0)
    middle = 0.5 * (start + end)
    halves.paint_capsules([start, middle], [middle, end], radius, radius, 1.0, "max")
    np.testing.assert_allclose(halves.hu, canvas.hu, atol=1e-5)
    tapered = Canvas.filled(canvas.hu.shape, (0, 0, 0), spacing, 0.0)
    tapered.paint_capsules([start], [end], radius, 1.0, 1.0, "max")
    assert 0.3 * canvas.hu.sum() < tapered.hu.sum() < 0.6 * canvas.hu.sum()


def test_flipped_layouts_keep_every_voxel_at_its_world_position():
    canonical = VolumeGeometry((5, 6, 7), (-10.0, 20.0, -300.0), (0.7, 0.7, 2.5), np.eye(3))
    volume = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    for flips in ((1, 1, 1), (-1, -1, 1), (1, -1, -1), (-1, 1, -1)):
        layout = ScanLayout(canonical, flips)
        written, geometry = layout.orient(volume), layout.geometry
        assert np.linalg.det(geometry.direction) == pytest.approx(1.0)
        for irc in ((0, 0, 0), (4, 5, 6), (2, 1, 3)):
            world = canonical.irc_to_xyz(irc)
            moved = geometry.xyz_to_irc(world, round=True)
            assert written[tuple(moved)] == volume[irc]


def test_trees_taper_and_fill_their_territory():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(600, 3))
    points = 40.0 * points / np.linalg.norm(points, axis=1, keepdims=True) * rng.random((600, 1)) ** (1 / 3)
    tree = grow_tree(rng, (0.0, 0.0, -60.0), points, 6.0, 0.4)
    assert np.all(tree.end_radius_mm <= tree.start_radius_mm)
    assert tree.start_radius_mm.max() == 6.0 and tree.end_radius_mm.min() < 1.0
    ends = {tuple(p) for p in np.round(tree.end_xyz, 6)}
    starts = np.round(tree.start_xyz, 6)
    children_radius = {}
    for start, radius in zip(map(tuple, starts), tree.start_radius_mm):
        children_radius.setdefault(start, []).append(radius)
    for parent_end, parent_radius in zip(map(tuple, np.round(tree.end_xyz, 6)), tree.end_radius_mm):
        if parent_end in children_radius:  # Murray: r^3 of the children adds up to the parent's
            assert sum(r ** 3 for r in children_radius[parent_end]) == pytest.approx(parent_radius ** 3, rel=1e-6)
    reached = np.linalg.norm(points[:, None, :] - tree.end_xyz[None, :, :], axis=2).min(axis=1)
    assert np.median(reached) < 6.0 and len(ends) > 100


def test_noise_has_the_asked_strength_and_quantises_to_int16():
    volume = np.full((20, 64, 64), -850.0, dtype=np.float32)
    hu = quantise_with_noise(volume.copy(), 25.0, np.random.default_rng(1))
    assert hu.dtype == np.int16
    assert hu.mean() == pytest.approx(-850, abs=2) and hu.std() == pytest.approx(25, rel=0.15)
    assert noise_sigma_hu(20.0, (0.7, 0.7, 1.25)) == pytest.approx(20.0)
    assert noise_sigma_hu(20.0, (1.4, 1.4, 2.5)) == pytest.approx(20.0 / np.sqrt(8))
    padded = quantise_with_noise(volume.copy(), 5.0, np.random.default_rng(1), outside_circle=True)
    assert padded[0, 0, 0] == -3024 and padded[0, 32, 32] > -900
