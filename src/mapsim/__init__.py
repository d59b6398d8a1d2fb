"""mapsim: the Morphological Autoregression Protocol for amorphous 2D structures.

Monte Carlo training data, MAP models (analytic, correlation cluster expansion,
Gated PixelCNN), exact and fast autoregressive sampling, and structure analysis.
"""

__version__ = "0.1.0"

from mapsim.errors import MapsimError  # noqa: E402
from mapsim.lattice import Dataset, load_dataset, save_dataset  # noqa: E402

__all__ = ["__version__", "MapsimError", "Dataset", "load_dataset", "save_dataset"]
