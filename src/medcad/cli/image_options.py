"""Parsing of the option values shared by the image commands (sizes, lists of names and fractions)."""

from __future__ import annotations

from medcad.errors import MedcadError


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """``"160"`` -> (160, 160); ``"128x256"`` -> (128, 256) as (height, width); None stays None."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 8:
        raise MedcadError(f"image size {text!r}: give one number or HEIGHTxWIDTH, each at least 8 (e.g. 160 or 128x256)")
    return (values[0], values[-1])


def parse_names(text: str | None) -> tuple[str, ...] | None:
    """``"normal,pneumonia"`` -> ("normal", "pneumonia")."""
    if text is None:
        return None
    return tuple(name.strip() for name in text.split(",") if name.strip())


def parse_fractions(text: str | None) -> tuple[float, float, float] | None:
    """``"0.7,0.15,0.15"`` -> train / val / test shares (must sum to 1)."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or abs(sum(values) - 1) > 1e-6:
        raise MedcadError(f"split fractions {text!r}: give three shares train,val,test summing to 1 (e.g. 0.7,0.15,0.15)")
    return values
