"""Transforms of scans and images: intensity, spatial, augmentation, projections (MIP)."""
