"""mapsim: the Morphological Autoregression Protocol for amorphous 2D structures.

Monte Carlo training data, MAP models (analytic, correlation cluster expansion,
Gated PixelCNN), exact and fast autoregressive sampling, and structure analysis.
"""

__version__ = "0.1.0"

import os as _os

# OpenMP threads (numba's parallel sampler, torch) that spin while waiting make every
# barrier cost a time slice when the cores are shared with other work: measured here, a
# 128x128 PixelCNN sample took 16 s instead of 0.6 s beside one busy process.  Sleeping
# waiters cost a few microseconds per barrier on an idle machine.  A user's own setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from mapsim.errors import MapsimError  # noqa: E402
from mapsim.lattice import Dataset, load_dataset, save_dataset  # noqa: E402

__all__ = ["__version__", "MapsimError", "Dataset", "load_dataset", "save_dataset"]
