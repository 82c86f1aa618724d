"""World <-> voxel mapping: round trips, SimpleITK agreement, rounding."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from medcad.geometry import VolumeGeometry

finite = st.floats(min_value=-500, max_value=500, allow_nan=False)
spacing = st.floats(min_value=0.3, max_value=5.0)


@st.composite
def geometries(draw) -> VolumeGeometry:
    """Random oblique or flipped directions: a random rotation times random axis flips."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        rotation = q * np.sign(np.diag(r))
    else:
        rotation = np.eye(3)[rng.permutation(3)]
    flips = np.diag(rng.choice([-1.0, 1.0], size=3))
    direction = rotation @ flips
    return VolumeGeometry((40, 50, 60), [draw(finite) for _ in range(3)], [draw(spacing) for _ in range(3)], direction)


def _sitk_image(geometry: VolumeGeometry) -> sitk.Image:
    image = sitk.Image([int(n) for n in geometry.shape_irc[::-1]], sitk.sitkInt16)
    image.SetOrigin(geometry.origin_xyz.tolist())
    image.SetSpacing(geometry.spacing_xyz.tolist())
    image.SetDirection(geometry.direction.ravel().tolist())
    return image


@settings(max_examples=60, deadline=None)
@given(geometries(), st.lists(st.tuples(finite, finite, finite), min_size=1, max_size=20))
def test_xyz_irc_round_trip(geometry, points):
    xyz = np.array(points)
    back = geometry.irc_to_xyz(geometry.xyz_to_irc(xyz))
    np.testing.assert_allclose(back, xyz, atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(geometries(), st.lists(st.tuples(st.floats(-5, 45), st.floats(-5, 55), st.floats(-5, 65)), min_size=1, max_size=10))
def test_irc_to_xyz_agrees_with_simpleitk(geometry, points):
    image = _sitk_image(geometry)
    irc = np.array(points)
    ours = geometry.irc_to_xyz(irc)
    theirs = np.array([image.TransformContinuousIndexToPhysicalPoint(tuple(p[::-1].tolist())) for p in irc])
    np.testing.assert_allclose(ours, theirs, atol=1e-8)
    back = np.array([image.TransformPhysicalPointToContinuousIndex(tuple(p.tolist())) for p in ours])[:, ::-1]
    np.testing.assert_allclose(geometry.xyz_to_irc(ours), back, atol=1e-6)


def test_single_point_and_rounding():
    geometry = VolumeGeometry((10, 20, 30), (-10.0, 5.0, 100.0), (0.5, 0.7, 2.5), np.diag([1.0, -1.0, 1.0]))
    xyz = geometry.irc_to_xyz((3, 4, 5))
    # x = -10 + 5 * 0.5; y = 5 - 4 * 0.7 (flipped row axis); z = 100 + 3 * 2.5
    np.testing.assert_allclose(xyz, [-7.5, 2.2, 107.5])
    nudged = xyz + np.array([0.2, -0.3, 1.0])  # under half a voxel on every axis
    assert geometry.xyz_to_irc(nudged, round=True).tolist() == [3, 4, 5]
    assert geometry.xyz_to_irc(nudged, round=True).dtype == np.int64
    assert geometry.contains_irc((3, 4, 5)) and not geometry.contains_irc((10, 0, 0))


def test_rejects_bad_geometry():
    with pytest.raises(ValueError, match="singular"):
        VolumeGeometry((2, 2, 2), (0, 0, 0), (1, 1, 1), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="positive"):
        VolumeGeometry((2, 2, 2), (0, 0, 0), (1, 0, 1), np.eye(3))
    with pytest.raises(ValueError, match="shape"):
        VolumeGeometry((2, 2, 2), (0, 0, 0), (1, 1, 1), np.eye(3)).xyz_to_irc(np.zeros((2, 4)))
