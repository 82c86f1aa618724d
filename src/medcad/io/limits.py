"""Allocation limits checked before allocation: a header cannot make medcad take the machine's memory.

Every reader compares the size a file *declares* (voxels of a volume header, pixels of an image,
slices x rows x columns of a DICOM series) with the limit before it allocates or decodes
anything. The limit is ``MEDCAD_MAX_VOXELS`` (environment) or ``medcad --max-voxels N``, default
``DEFAULT_MAX_VOXELS`` (2**30: a 1024 x 1024 x 1024 volume, 2 GiB as int16; the largest CTs,
512 x 512 x 3000 whole-body scans, are 0.8 G voxels).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from medcad.errors import InputError

ENVIRONMENT_VARIABLE = "MEDCAD_MAX_VOXELS"
DEFAULT_MAX_VOXELS = 2**30


def max_voxels() -> int:
    """The voxel (or pixel) limit in force."""
    text = os.environ.get(ENVIRONMENT_VARIABLE)
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(float(text))
    except ValueError:
        raise InputError(None, f"{ENVIRONMENT_VARIABLE}={text!r} is not a number of voxels") from None
    if value <= 0:
        raise InputError(None, f"{ENVIRONMENT_VARIABLE} must be positive, not {text!r}")
    return value


def set_max_voxels(value: int) -> None:
    """Sets the limit for this process and its children (``medcad --max-voxels``)."""
    if value <= 0:
        raise InputError(None, f"--max-voxels must be positive, not {value}")
    os.environ[ENVIRONMENT_VARIABLE] = str(int(value))


def check_size(source: str | Path | None, shape: Sequence[int], what: str = "voxels") -> int:
    """Raises InputError when ``shape`` (as the file declares it) exceeds the limit; returns its size."""
    if any(int(n) < 0 for n in shape):
        raise InputError(source, f"declares a negative size {tuple(int(n) for n in shape)}")
    size = math.prod(int(n) for n in shape)
    limit = max_voxels()
    if size > limit:
        raise InputError(source, f"declares {' x '.join(str(int(n)) for n in shape)} = {size:,} {what}, over the limit "
                                 f"of {limit:,} (raise it with --max-voxels or {ENVIRONMENT_VARIABLE})")
    return size
