"""The paper's four presets keep their protocol: same seed, byte-identical grids as before issue 12.

``tests/data/paper_presets_reference.npz`` was written by the code as it stood before the move
sets, grand-canonical particles and energy traces were added (its ``made_by`` entry names the
commit and the call); each preset is stored with periodic and open edges. Metadata may only
gain keys: every key (nested ones included) and value of the old metadata must be unchanged.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from mapsim.montecarlo import preset_params, simulate

REF = Path(__file__).parent / "data" / "paper_presets_reference.npz"
PAPER = ("fluid-cold-repulsive", "fluid-hot-repulsive", "fluid-hot-attractive", "drying")


@pytest.fixture(scope="module")
def reference():
    with np.load(REF, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _contains(old, new, path=""):
    """Keys of ``old`` missing from ``new`` or with other values (``new`` may have more keys)."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [path]
        return [p for k in old for p in _contains(old[k], new.get(k, KeyError), f"{path}.{k}")]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


@pytest.mark.parametrize("name", PAPER)
@pytest.mark.parametrize("edges", ["periodic", "open"])
def test_paper_preset_grids_unchanged(reference, name, edges):
    key = f"{name}__{edges}"
    old = reference[key]
    n, h, w = old.shape
    ds = simulate(preset_params(name, {"periodic": edges == "periodic"}), n, h, w, seed=7, workers=1, preset=name)
    assert ds.grids.dtype == old.dtype
    assert np.array_equal(ds.grids, old), f"{key}: grids differ from the pre-issue-12 reference"
    old_meta = json.loads(str(reference[key + "__metadata"]))
    new_meta = json.loads(json.dumps(ds.metadata, default=lambda a: np.asarray(a).tolist()))
    old_meta.pop("mapsim_version")  # the version string may move on; everything else may only gain keys
    assert _contains(old_meta, new_meta) == []
