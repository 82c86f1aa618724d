"""Synthetic CT cohorts in the LUNA16 layout: phantom chests (optionally down to the pelvis) with
lungs, vessel and airway trees, ribs, a labelled spine T1-L5, and nodules whose size and
malignancy follow the real LUNA16 / LIDC statistics.

``write_cohort(out_dir, scans, seed, PhantomOptions(size="small"))`` is what ``medcad synth``
runs; ``generate_phantom(seed, index, options)`` makes one scan with its records in memory.
"""

from medcad.data.synthetic.cohort import FORMATS, ScanSummary, write_cohort
from medcad.data.synthetic.layout import SIZES
from medcad.data.synthetic.phantom import Phantom, PhantomOptions, VertebraLevel, generate_phantom

__all__ = ["FORMATS", "SIZES", "Phantom", "PhantomOptions", "ScanSummary", "VertebraLevel", "generate_phantom",
           "write_cohort"]
