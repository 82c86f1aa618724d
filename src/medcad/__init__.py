"""medcad: medical scans from raw files to findings."""

__version__ = "0.1.0"
