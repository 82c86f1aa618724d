"""Synthetic CT cohorts in the LUNA16 layout: phantom chests (optionally down to the pelvis) with
lungs, vessel and airway trees, ribs, a labelled spine T1-L5, and nodules whose size and
malignancy follow the real LUNA16 / LIDC statistics.

``write_cohort(out_dir, scans, seed, PhantomOptions(size="small"))`` is what ``medcad synth``
runs; ``generate_phantom(seed, index, options)`` makes one scan with its records in memory.
``write_chests(out_dir, per_class, seed)`` (``medcad synth-chests``) writes the much simpler
hand-made chests with / without a solid nodule in class folders, a scan-level classification task.
"""

from medcad.data.synthetic.chests import small_chest, write_chests
from medcad.data.synthetic.cohort import FORMATS, ScanSummary, write_cohort
from medcad.data.synthetic.layout import SIZES
from medcad.data.synthetic.phantom import Phantom, PhantomOptions, VertebraLevel, generate_phantom

__all__ = ["FORMATS", "SIZES", "Phantom", "PhantomOptions", "ScanSummary", "VertebraLevel", "generate_phantom",
           "small_chest", "write_chests", "write_cohort"]
