"""Structure statistics accumulated block by block, so a dataset is never read whole.

A *source* is anything with ``n_samples``, ``shape`` (H, W) and ``read(k0, k1, r0, r1)`` returning
rows ``r0 .. r1 - 1`` of samples ``k0 .. k1 - 1`` as uint8 (k1 - k0, r1 - r0, W): an in-memory
:class:`mapsim.lattice.Dataset`, a zarr store opened with :func:`mapsim.lattice.open_dataset`, or
the comparison windows of :class:`WindowSource`.  :func:`plan_blocks` cuts it into blocks of about
``block_pixels`` pixels: several whole samples at a time, or, for a sample larger than that, one
sample's rows a block at a time.  Each block is read once, with the rows around it that the
statistics need (a *halo*: one row above, ``max(r_max, 1)`` below; wrapped round a periodic axis,
empty beyond an open one), and :class:`BlockStatistics` adds what it holds to per-sample sums:

- occupied sites, and g(r) pair counts: the pairs whose first site is in the block, at
  displacements (dy ≥ 0, |dx| ≤ r_max), by FFT cross-correlation of the block with the block plus
  its halo below; the other half follows from C(-d) = C(d).  Integer counts, so exact;
- neighbour histograms (the block's particles with their 3 × 3 neighbourhood from the halo);
- nearest-neighbour bond sums of the class and of the Hamiltonian's particle/solvent classes (bonds
  inside the block and from its last row to the next), integer counts, so the energy per site is
  the one of the whole sample;
- cluster sizes: each block is labelled (:func:`scipy.ndimage.label`), its labels touching its
  first row are joined to the clusters still open on the previous block's last row (a union-find
  over the block's labels and those open clusters: at most one row's worth are carried), and a
  cluster is counted when no later row can reach it; a periodic row axis keeps the clusters on the
  sample's first row open until its last row has been joined to them.  The same partition as
  :class:`mapsim.analysis.structure.ClusterSizes`;
- S(k): whole samples by one 2-D FFT each; a sample larger than a block by two passes of 1-D FFTs
  (rows block by block, each column block's half-transform written to a temporary file, then the
  columns), which needs 16 bytes of temporary disk per pixel of that sample.

Peak memory is a few tens of bytes per pixel of a block (FFT work arrays), plus per-sample sums
(K × the number of g(r) bins ...) and the distinct (sample, cluster size) pairs.  Every
statistic but S(k) is an integer count and equals the whole-array result exactly; S(k) sums the
same squares in another order (relative round-off ~1e-15 per term).

:func:`analyze` (``mapsim analyze``) and the windows of :func:`mapsim.analysis.compare.compare_datasets`
are computed here.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from mapsim.analysis.structure import _Analysis, _axes, _displacements, available_pairs, boundary, check_r_max, \
    ideal_pairs, lattice_r2, neighbour_histograms, normalised, pooled_g, recorded_hamiltonian, resolve_class, shells
from mapsim.lattice import Dataset, StoredDataset
from mapsim.montecarlo.hamiltonian import TERMS, Hamiltonian

DEFAULT_BLOCK_PIXELS = 1 << 20
"""Pixels read and analysed at a time (1 Mi: about 60-100 MiB of work arrays)."""


def plan_blocks(n_samples: int, shape: tuple[int, int], block_pixels: int | None = None,
                row_multiple: int = 1) -> list[tuple[int, int, int, int]]:
    """Blocks ``(k0, k1, r0, r1)`` covering every sample: whole samples, or one sample's rows.

    Parameters
    ----------
    n_samples : int
    shape : (H, W)
    block_pixels : int, optional
        About how many pixels a block holds (default :data:`DEFAULT_BLOCK_PIXELS`); a block has
        at least one row.
    row_multiple : int
        Row blocks start at multiples of it (bands of the drift profile stay whole).
    """
    H, W = shape
    bp = DEFAULT_BLOCK_PIXELS if block_pixels is None else max(1, int(block_pixels))
    if H * W <= bp:
        b = max(1, bp // (H * W))
        return [(k, min(n_samples, k + b), 0, H) for k in range(0, n_samples, b)]
    rows = max(row_multiple, (bp // W) // row_multiple * row_multiple)
    return [(k, k + 1, r, min(H, r + rows)) for k in range(n_samples) for r in range(0, H, rows)]


def read_rows(source, k0: int, k1: int, lo: int, hi: int, periodic_rows: bool) -> np.ndarray:
    """Rows ``lo .. hi - 1`` of samples ``k0 .. k1 - 1``; rows outside 0 .. H - 1 wrap round a
    periodic row axis and are empty (0) beyond an open one.  Shape (k1 - k0, hi - lo, W)."""
    H, W = source.shape
    if periodic_rows:
        parts, y = [], lo
        while y < hi:
            ym = y % H
            take = min(hi - y, H - ym)
            parts.append(np.asarray(source.read(k0, k1, ym, ym + take)))
            y += take
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)
    a, b = max(lo, 0), min(hi, H)
    if a >= b:
        return np.zeros((k1 - k0, hi - lo, W), np.uint8)
    return np.pad(np.asarray(source.read(k0, k1, a, b)), ((0, 0), (a - lo, hi - b), (0, 0)))


def _pair_counts(a: np.ndarray, c: np.ndarray, periodic_cols: bool, r_max: int) -> np.ndarray:
    """C[s, dy, dx] = Σ a[s, y, x] c[s, y + dy, x + dx] for 0 ≤ dy ≤ r_max, |dx| ≤ r_max.

    ``a`` (b, n, W), ``c`` (b, n + r_max, W): the block and the block with its halo below.
    Returns (b, 2 r_max + 1, 2 r_max + 1), index [r_max + dy, r_max + dx], both signs of dy.
    """
    P = sfft.next_fast_len(c.shape[1], real=True)  # linear along rows: y + dy < n + r_max <= P
    W = a.shape[2]
    Q = W if periodic_cols else sfft.next_fast_len(W + r_max, real=True)
    fa = sfft.rfft2(a.astype(np.float64), s=(P, Q))
    fc = sfft.rfft2(c.astype(np.float64), s=(P, Q))
    corr = sfft.irfft2(np.conj(fa) * fc, s=(P, Q))
    half = np.rint(corr[:, : r_max + 1][:, :, np.arange(-r_max, r_max + 1) % Q])  # (b, r_max + 1, 2 r_max + 1)
    return np.concatenate([half[:, :0:-1, ::-1], half], axis=1)  # C(-d) = C(d)


def _bond_sum(a: np.ndarray, b: np.ndarray, n: int, next_ok: np.ndarray, periodic_cols: bool) -> np.ndarray:
    """Σ over bonds {i, j} with i in the block (right and down) of a_i b_j + b_i a_j, per sample.

    ``a``, ``b`` (s, rows, W) bool with the block at rows 1 .. n and the next row below it;
    ``next_ok`` (n,): whether block row y has a bond to the row below.
    """
    A, B = a[:, 1 : 1 + n], b[:, 1 : 1 + n]
    An, Bn = a[:, 2 : 2 + n], b[:, 2 : 2 + n]
    down = ((A & Bn).sum(axis=2) + (B & An).sum(axis=2)) @ next_ok.astype(np.int64)
    if periodic_cols and A.shape[2] >= 2:
        right = (A & np.roll(B, -1, axis=2)).sum(axis=(1, 2)) + (B & np.roll(A, -1, axis=2)).sum(axis=(1, 2))
    else:
        right = (A[..., :-1] & B[..., 1:]).sum(axis=(1, 2)) + (B[..., :-1] & A[..., 1:]).sum(axis=(1, 2))
    return (down + right).astype(np.int64)


def _row_links(lo: np.ndarray, hi: np.ndarray, dxs: Sequence[int], wrap: bool) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (lo[s, x], hi[s, x + dx]) of ids ≥ 0 on two adjacent rows (columns wrap if ``wrap``)."""
    W = lo.shape[1]
    src, dst = [], []
    for dx in dxs:
        if wrap:
            h = np.roll(hi, -dx, axis=1)
            l_ = lo
        elif dx >= 0:
            l_, h = lo[:, : W - dx], hi[:, dx:]
        else:
            l_, h = lo[:, -dx:], hi[:, : W + dx]
        m = (l_ >= 0) & (h >= 0)
        src.append(l_[m])
        dst.append(h[m])
    return np.concatenate(src), np.concatenate(dst)


def _components(n_nodes: int, src: np.ndarray, dst: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of ``n_nodes`` nodes joined by the edges (src, dst)."""
    if src.size == 0:
        return n_nodes, np.arange(n_nodes)
    graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(n_nodes, n_nodes))
    return connected_components(graph, directed=False)


class _ClusterStream:
    """Cluster sizes of samples read in row blocks (module docstring): the open clusters of the last
    row (and, on a periodic row axis, of the first), their sizes and samples."""

    def __init__(self, connectivity: int, periodic: tuple[bool, bool], H: int) -> None:
        self.dxs = (0,) if connectivity == 4 else (-1, 0, 1)
        self.conn = connectivity
        self.py, self.px = periodic
        self.H = H
        self.structure = np.zeros((3, 3, 3), dtype=bool)  # no connection along the sample axis
        self.structure[1] = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
        self.key = H * int(1 << 32)  # (sample, size) -> sample * key + size
        self.keys: list[np.ndarray] = []  # per block: the distinct (sample, size) keys and how many clusters
        self.counts: list[np.ndarray] = []
        self._reset()

    def _reset(self) -> None:
        self.live_size = np.zeros(0, np.int64)
        self.live_owner = np.zeros(0, np.int64)
        self.front = self.top = None

    def add(self, occ: np.ndarray, k0: int, r0: int, r1: int) -> None:
        """Rows r0 .. r1 - 1 of samples k0 .. (occ (b, r1 - r0, W) bool)."""
        labels, n_lab = ndimage.label(occ, structure=self.structure)
        L = self.live_size.size
        node = labels.astype(np.int64) + (L - 1)  # label l -> node L + l - 1; background -> L - 1 ...
        node[labels == 0] = -1
        src, dst = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        if self.px:  # the column wrap inside the block
            first, last = node[:, :, 0], node[:, :, -1]
            pairs = [(last, first)]
            if self.conn == 8:
                pairs += [(last[:, :-1], first[:, 1:]), (first[:, :-1], last[:, 1:])]
            for p, q in pairs:
                m = (p >= 0) & (q >= 0)
                src.append(p[m])
                dst.append(q[m])
        if r0 > 0:  # the seam with the previous block's last row
            s, d = _row_links(self.front, node[:, 0], self.dxs, self.px)
            src.append(s)
            dst.append(d)
        n_comp, comp = _components(L + n_lab, np.concatenate(src), np.concatenate(dst))
        lab_size = np.bincount(labels.ravel(), minlength=n_lab + 1)[1:]
        maxima = np.maximum.accumulate(labels.reshape(labels.shape[0], -1).max(axis=1, initial=0))
        lab_owner = k0 + np.searchsorted(maxima, np.arange(1, n_lab + 1), side="left")
        size = np.bincount(comp, weights=np.concatenate([self.live_size, lab_size]), minlength=n_comp)
        owner = np.zeros(n_comp, np.int64)
        owner[comp] = np.concatenate([self.live_owner, lab_owner])
        lookup = np.concatenate([comp, [-1]])  # node -1 -> -1
        front = lookup[node[:, -1]]
        top = (lookup[node[:, 0]] if r0 == 0 else lookup[self.top]) if self.py else None
        if r1 == self.H:
            if self.py and self.H > 1:  # the row wrap: last row to first row
                s, d = _row_links(front, top, self.dxs, self.px)
                n2, comp2 = _components(n_comp, s, d)
                size = np.bincount(comp2, weights=size, minlength=n2)
                owner2 = np.zeros(n2, np.int64)
                owner2[comp2] = owner
                owner = owner2
            self._emit(size, owner, np.ones(size.size, bool))
            self._reset()
            return
        live = np.zeros(n_comp + 1, bool)
        live[front] = True
        if top is not None:
            live[top] = True
        live = live[:-1]
        self._emit(size, owner, ~live)
        renum = np.full(n_comp + 1, -1)
        renum[np.flatnonzero(live)] = np.arange(int(live.sum()))
        self.live_size = np.rint(size[live]).astype(np.int64)
        self.live_owner = owner[live]
        self.front = renum[front]
        self.top = renum[top] if top is not None else None

    def _emit(self, size: np.ndarray, owner: np.ndarray, done: np.ndarray) -> None:
        keep = done & (size > 0)
        key, count = np.unique(owner[keep] * self.key + np.rint(size[keep]).astype(np.int64), return_counts=True)
        self.keys.append(key)
        self.counts.append(count)

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Distinct (sample, size) pairs, sorted, and how many clusters have each: sizes, samples, counts."""
        key, inverse = np.unique(np.concatenate(self.keys), return_inverse=True)
        count = np.bincount(inverse, weights=np.concatenate(self.counts), minlength=key.size).astype(np.int64)
        return key % self.key, key // self.key, count


class _Shells:
    """The |k| shells of :func:`mapsim.analysis.structure.shells` for an (H, W) grid, by column blocks."""

    def __init__(self, shape: tuple[int, int], whole: bool) -> None:
        self.shape = shape
        if whole:
            idx, self.k_mean, self.count = shells(shape)
            self._flat = idx
            return
        H, W = shape
        self._flat = None
        dk = 2 * np.pi / min(shape)
        self._edges = np.arange(0.5 * dk, np.pi * np.sqrt(2) + dk, dk)
        nb = self._edges.size - 1
        cnt, ksum = np.zeros(nb, np.int64), np.zeros(nb)
        step = max(1, (1 << 20) // H)
        for c0 in range(0, W, step):
            idx, kk = self._raw(c0, min(W, c0 + step))
            ok = idx >= 0
            cnt += np.bincount(idx[ok], minlength=nb)
            ksum += np.bincount(idx[ok], weights=kk[ok], minlength=nb)
        keep = np.flatnonzero(cnt > 0)
        self._remap = np.full(nb + 1, -1)
        self._remap[keep] = np.arange(keep.size)
        self.k_mean = ksum[keep] / cnt[keep]
        self.count = cnt[keep].astype(float)

    def _raw(self, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        H, W = self.shape
        kk = np.hypot(2 * np.pi * np.fft.fftfreq(H)[:, None], 2 * np.pi * np.fft.fftfreq(W)[None, c0:c1])
        idx = np.digitize(kk, self._edges) - 1
        idx[(idx < 0) | (idx >= self._edges.size - 1)] = -1
        return idx, kk

    def index(self, c0: int, c1: int) -> np.ndarray:
        """Shell of every wave vector of columns c0 .. c1 - 1, shape (H, c1 - c0); -1: none."""
        if self._flat is not None:
            return self._flat.reshape(self.shape)[:, c0:c1]
        return self._remap[self._raw(c0, c1)[0]]


def _shell_sums(power: np.ndarray, idx: np.ndarray, n_shells: int) -> np.ndarray:
    """Σ of ``power`` (b, ...) over each shell of ``idx`` (...), per sample: (b, n_shells)."""
    b = power.shape[0]
    ok = idx.ravel() >= 0
    p = power.reshape(b, -1)[:, ok]
    owner = np.repeat(np.arange(b), p.shape[1])
    return np.bincount(owner * n_shells + np.tile(idx.ravel()[ok], b), weights=p.ravel(),
                       minlength=b * n_shells).reshape(b, n_shells)


def _result(attr: str, doc: str) -> property:
    """A read-only result property (an error before ``compute``)."""

    def get(self):
        self._need()
        return getattr(self, attr)

    return property(get, doc=doc)


class BlockStatistics(_Analysis):
    """Per-sample sufficient statistics of one class, accumulated over blocks (module docstring).

    Parameters
    ----------
    class_id : int
        The class analysed.
    periodic : bool or (bool, bool)
        Boundary of the samples (rows, columns); bonds wrap only when both axes do.
    r_max : int
        Range of g(r) (checked by the caller).
    energy_ids : (particle id, solvent id or None), optional
        Count the Hamiltonian's bond and site terms (:data:`mapsim.montecarlo.hamiltonian.TERMS`).
    block_pixels : int, optional
        See :func:`plan_blocks`.
    """

    def __init__(self, class_id: int, periodic: bool | tuple[bool, bool], r_max: int, *,
                 energy_ids: tuple[int, int | None] | None = None, block_pixels: int | None = None) -> None:
        self.class_id = int(class_id)
        self.periodic = _axes(periodic)
        self.r_max = int(r_max)
        self.energy_ids = energy_ids
        self.block_pixels = block_pixels

    def compute(self, source) -> "BlockStatistics":
        """Read ``source`` block by block (see the module docstring); returns self."""
        n = int(source.n_samples)
        H, W = (int(v) for v in source.shape)
        py, px = self.periodic
        pb = py and px
        R, rm = max(self.r_max, 1), self.r_max
        dy, dx, bins = _displacements(rm)
        r2 = lattice_r2(rm)
        blocks = plan_blocks(n, (H, W), self.block_pixels)
        whole = blocks[0][3] - blocks[0][2] == H
        sh = _Shells((H, W), whole)
        n_sh = sh.k_mean.size
        self._counts = np.zeros(n, np.int64)
        self._pairs = np.zeros((n, r2.size))
        self._nb = {4: np.zeros((n, 5), np.int64), 8: np.zeros((n, 9), np.int64)}
        self._self_bonds = np.zeros(n, np.int64)
        self._terms = np.zeros((n, len(TERMS)), np.int64) if self.energy_ids is not None else None
        self._sk = np.zeros((n, n_sh))
        clusters = {c: _ClusterStream(c, (py, px), H) for c in (4, 8)}
        spill = None
        for k0, k1, r0, r1 in blocks:
            rows = r1 - r0
            ext = read_rows(source, k0, k1, r0 - 1, r1 + R, py)  # rows r0 - 1 .. r1 + R - 1
            occ_ext = ext == self.class_id
            occ = occ_ext[:, 1 : 1 + rows]
            self._counts[k0:k1] += occ.sum(axis=(1, 2))
            # g(r): pairs from the block's sites, partners up to r_max rows below
            ac = _pair_counts(occ, occ_ext[:, 1 : 1 + rows + rm], px, rm)[:, rm + dy, rm + dx]
            binned = np.zeros((k1 - k0, r2.size))
            np.add.at(binned.T, bins, ac.T)
            self._pairs[k0:k1] += binned
            # neighbours: a particle's 3 x 3 neighbourhood; open axes do not count their border rows/columns
            pad = np.pad(occ_ext[:, : rows + 2], ((0, 0), (0, 0), (1, 1)), mode="wrap" if px else "constant")
            centre = occ.copy()
            if not py:
                centre[:, [y - r0 for y in (0, H - 1) if r0 <= y < r1], :] = False
            if not px:
                centre[:, :, [0, -1]] = False
            for c, h in neighbour_histograms(pad, centre).items():
                self._nb[c][k0:k1] += h
            # bonds (each once): inside the block and from its last row to the next
            y = np.arange(r0, r1)
            next_ok = (y + 1 < H) | (pb and H >= 2)
            self._self_bonds[k0:k1] += _bond_sum(occ_ext, occ_ext, rows, next_ok, pb)
            if self._terms is not None:
                pid, sid = self.energy_ids
                nn = ext == pid
                ll = ext == sid if sid is not None else np.zeros_like(nn)
                t = self._terms[k0:k1]
                t[:, 0] += _bond_sum(nn, nn, rows, next_ok, pb) // 2
                t[:, 1] += _bond_sum(ll, ll, rows, next_ok, pb) // 2
                t[:, 2] += _bond_sum(nn, ll, rows, next_ok, pb)
                t[:, 3] += ll[:, 1 : 1 + rows].sum(axis=(1, 2))
                t[:, 4] += nn[:, 1 : 1 + rows].sum(axis=(1, 2))
            for cs in clusters.values():
                cs.add(occ, k0, r0, r1)
            # S(k)
            if whole:
                x = occ.astype(np.float64)
                x -= x.mean(axis=(1, 2), keepdims=True)
                f = sfft.fft2(x)
                self._sk[k0:k1] += _shell_sums(f.real**2 + f.imag**2, sh.index(0, W), n_sh)
            else:
                if r0 == 0:
                    spill = _ColumnSpill(H, W, self.block_pixels)
                spill.add_rows(occ[0])
                if r1 == H:
                    self._sk[k0] += spill.power_shells(self._counts[k0] / (H * W), sh, n_sh)
                    spill = None
        self._cl = {c: cs.result() for c, cs in clusters.items()}
        self._site_pairs = np.bincount(bins, weights=available_pairs((H, W), (py, px), rm)[rm + dy, rm + dx],
                                       minlength=r2.size)
        self._r2, self._sites, self._shells = r2, H * W, sh
        self._computed = True
        return self

    # results: per sample (n = source.n_samples), as the estimators of mapsim.analysis.structure

    counts = _result("_counts", "Occupied sites per sample, shape (n,), int64.")
    r2 = _result("_r2", "Squared g(r) bin distances, shape (n_bins,).")
    pair_counts = _result("_pairs", "Ordered pair counts per sample and g(r) bin, shape (n, n_bins).")
    self_bonds = _result("_self_bonds", "Twice the nearest-neighbour bonds between sites of the class, shape (n,).")
    sk_power = _result("_sk", "Σ |ρ_s(k)|² over each |k| shell, per sample, shape (n, n_shells).")

    @property
    def expected_counts(self) -> np.ndarray:
        """Ideal-gas expectation of :attr:`pair_counts`, shape (n, n_bins)."""
        self._need()
        return ideal_pairs(self._counts, self._sites, self._site_pairs)

    def neighbour_counts(self, size: int) -> np.ndarray:
        """Particles with 0..size particle neighbours, per sample, shape (n, size + 1) (size 4 or 8)."""
        self._need()
        return self._nb[size]

    @property
    def energy_terms(self) -> dict[str, np.ndarray] | None:
        """The counts of :func:`mapsim.montecarlo.hamiltonian.energy_terms` per sample (with ``energy_ids``)."""
        self._need()
        return None if self._terms is None else {name: self._terms[:, i] for i, name in enumerate(TERMS)}

    def clusters(self, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
        """Size of every cluster and its sample, sorted by sample then size (shape (n_clusters,) each)."""
        self._need()
        size, sample, count = self._cl[connectivity]
        return np.repeat(size, count), np.repeat(sample, count)

    def cluster_size_counts(self, connectivity: int) -> np.ndarray:
        """Clusters of each size 0..max over all samples, shape (max_size + 1,), int64 (memory: the sizes seen)."""
        self._need()
        size, _, count = self._cl[connectivity]
        return np.bincount(size, weights=count, minlength=1).astype(np.int64)

    @property
    def k(self) -> np.ndarray:
        """Mean |k| of each shell, shape (n_shells,)."""
        self._need()
        return self._shells.k_mean

    @property
    def shell_count(self) -> np.ndarray:
        """Wave vectors per shell, shape (n_shells,)."""
        self._need()
        return self._shells.count


class _ColumnSpill:
    """The 2-D FFT of one sample too large for a block: 1-D FFTs of its rows, block by block, kept on
    disk by column blocks; then 1-D FFTs of the columns, a column block at a time."""

    def __init__(self, H: int, W: int, block_pixels: int | None) -> None:
        bp = DEFAULT_BLOCK_PIXELS if block_pixels is None else max(1, int(block_pixels))
        self.H, self.W = H, W
        self.step = max(64, bp // H)  # columns per file: at least 64, so a tiny block does not make W files
        self.dir = tempfile.TemporaryDirectory(prefix="mapsim-sk-")
        self.files = [Path(self.dir.name) / f"{c0}.bin" for c0 in range(0, W, self.step)]

    def add_rows(self, occ_rows: np.ndarray) -> None:
        f = sfft.fft(occ_rows.astype(np.float64), axis=1)  # (rows, W) complex
        for i, c0 in enumerate(range(0, self.W, self.step)):
            with open(self.files[i], "ab") as fh:
                fh.write(np.ascontiguousarray(f[:, c0 : c0 + self.step]).tobytes())

    def power_shells(self, mean: float, sh: _Shells, n_sh: int) -> np.ndarray:
        """Σ |FFT2(x - mean)|² per shell; removes the files."""
        out = np.zeros(n_sh)
        try:
            for i, c0 in enumerate(range(0, self.W, self.step)):
                c1 = min(self.W, c0 + self.step)
                f = np.fromfile(self.files[i], dtype=np.complex128).reshape(self.H, c1 - c0)
                if c0 == 0:
                    f[:, 0] -= mean * self.W  # the mean's transform lives at q = 0 (and only p = 0 survives)
                f = sfft.fft(f, axis=0)
                out += _shell_sums((f.real**2 + f.imag**2)[None], sh.index(c0, c1), n_sh)[0]
        finally:
            self.dir.cleanup()
        return out


class WindowSource:
    """Windows of one shape cut from datasets, as a source (module docstring).

    Parameters
    ----------
    parts : sequence of (dataset, row0, col0, choice, n_cols)
        Windows ``choice[s]`` (indices in row-major order, ``n_cols`` per window row) of every
        sample s of ``dataset``, tiled from (row0, col0).
    shape : (h, w)
    """

    def __init__(self, parts: Sequence[tuple[object, int, int, np.ndarray, int]], shape: tuple[int, int]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self._where = []  # (dataset, sample, row, col) of every window
        for ds, row0, col0, choice, n_cols in parts:
            for s, picks in enumerate(np.asarray(choice)):
                for q in picks:
                    wy, wx = divmod(int(q), int(n_cols))
                    self._where.append((ds, s, row0 + wy * self.shape[0], col0 + wx * self.shape[1]))
        self.n_samples = len(self._where)
        self._band = (None, None, None, None)  # the rows last read: (dataset, sample, r0, r1) -> array
        self._rows = None

    def read(self, k0: int, k1: int, r0: int = 0, r1: int | None = None) -> np.ndarray:
        """Rows r0 .. r1 - 1 of windows k0 .. k1 - 1, shape (k1 - k0, r1 - r0, w)."""
        h, w = self.shape
        r1 = h if r1 is None else r1
        out = np.empty((k1 - k0, r1 - r0, w), np.uint8)
        for i in range(k0, k1):
            ds, s, row, col = self._where[i]
            key = (id(ds), s, row + r0, row + r1)
            if self._band != key:  # windows side by side share the rows read
                self._rows = np.asarray(ds.read(s, s + 1, row + r0, row + r1))[0]
                self._band = key
            out[i - k0] = self._rows[:, col : col + w]
        return out


def blockwise_pieces(source, band_rows: int, col0: int, width: int,
                     piece_fn: Callable[[np.ndarray], dict[str, np.ndarray]],
                     block_pixels: int | None = None) -> dict[str, np.ndarray]:
    """``piece_fn`` (a dict of (b, n_bands, n_cols) arrays) of columns col0 .. of every sample, in row
    blocks of whole bands; the bands concatenated, shape (n, H // band_rows, n_cols) each."""
    H = source.shape[0]
    nb = H // band_rows
    out: dict[str, np.ndarray] = {}
    n = source.n_samples
    for k0, k1, r0, r1 in plan_blocks(n, (nb * band_rows, source.shape[1]), block_pixels, band_rows):
        g = np.asarray(source.read(k0, k1, r0, r1))[:, :, col0 : col0 + width]
        for key, v in piece_fn(g).items():
            if key not in out:
                out[key] = np.zeros((n, nb, v.shape[2]), dtype=v.dtype)
            out[key][k0:k1, r0 // band_rows : r1 // band_rows] = v
    return out


def preview(source, k: int, max_side: int = 1024, block_pixels: int | None = None) -> tuple[np.ndarray, int]:
    """Sample ``k`` for a picture: every ``step``-th row and column, so that no side exceeds ``max_side``.

    Returns
    -------
    image : ndarray of uint8, shape (ceil(H / step), ceil(W / step))
    step : int
    """
    H, W = source.shape
    step = max(1, -(-max(H, W) // max_side))
    bp = DEFAULT_BLOCK_PIXELS if block_pixels is None else max(1, int(block_pixels))
    rows = max(1, bp // W // step) * step  # a multiple of step, so the rows kept are global multiples
    # copies: a strided view would keep every block it was cut from alive
    parts = [np.asarray(source.read(k, k + 1, r0, min(H, r0 + rows)))[0, ::step, ::step].copy()
             for r0 in range(0, H, rows)]
    return np.concatenate(parts), step


def analyze(dataset: Dataset | StoredDataset, class_name: str | int | None = None, *, periodic: bool | None = None,
            r_max: int | None = None, hamiltonian: Hamiltonian | None = None,
            block_pixels: int | None = None) -> dict[str, Any]:
    """All statistics of one dataset for one class, as a JSON-ready dict.

    The samples are read block by block (:mod:`mapsim.analysis.blockwise`), so a zarr store
    (:func:`mapsim.lattice.open_dataset`) is never read whole; every result but S(k) equals the
    estimators of :mod:`mapsim.analysis.structure` on the whole array exactly, S(k) to round-off.

    Parameters
    ----------
    dataset : Dataset or StoredDataset
    class_name : str or int, optional
        Class to analyse (default :func:`default_class`).
    periodic : bool, optional
        Override of the metadata's boundary (:func:`boundary`: axis by axis, so a sample periodic
        along one axis only is analysed with each axis's own rule).
    r_max : int, optional
        Range of g(r) (default ``min(10, allowed)``).
    hamiltonian : Hamiltonian, optional
        Energy per site is reported when given, or when ``metadata["params"]``
        names Hamiltonian parameters (not when those parameters include a
        solvent the dataset does not keep: ``energy_note`` says so).
    block_pixels : int, optional
        Pixels analysed at a time (:func:`mapsim.analysis.blockwise.plan_blocks`).

    Returns
    -------
    dict
        ``class``, ``periodic``, ``n_samples``, ``shape``, ``density_mean``,
        ``density_std``, ``densities`` (n,), ``r``, ``r2``, ``g_r`` (n_bins,),
        ``neighbours4`` (5,), ``neighbours8`` (9,), ``cluster_sizes4`` and
        ``cluster_sizes8`` (counts of each size), mean cluster sizes,
        ``nn_pairs_per_site`` (mean), ``energy_per_site`` (mean, or None),
        ``k`` and ``S_k``.
    """
    cid = resolve_class(dataset, class_name)
    per = boundary(dataset.metadata, periodic)
    r_max = check_r_max(r_max, dataset.shape, per, "samples")
    hamiltonian, energy_note = recorded_hamiltonian(dataset, hamiltonian)
    ids = None
    if hamiltonian is not None:
        ids = (dataset.classes.index("particle") if "particle" in dataset.classes else 1,
               dataset.classes.index("solvent") if "solvent" in dataset.classes else None)
    st = BlockStatistics(cid, per, r_max, energy_ids=ids, block_pixels=block_pixels).compute(dataset)
    sites = dataset.shape[0] * dataset.shape[1]
    rho = st.counts / sites
    # the Hamiltonian's bonds wrap both axes or none; a mixed boundary counts the open bonds only
    energy = None if hamiltonian is None else float((hamiltonian.energy_of_terms(st.energy_terms) / sites).mean())
    sizes = {c: st.cluster_size_counts(c) for c in (4, 8)}
    n_cl = {c: int(sizes[c].sum()) for c in (4, 8)}
    total = int(st.counts.sum())
    sk = st.sk_power.sum(axis=0) / st.shell_count / total if total > 0 else np.full(st.k.size, np.nan)
    return {
        "class": dataset.classes[cid],
        "class_id": cid,
        "periodic": per,
        "n_samples": dataset.n_samples,
        "shape": list(dataset.shape),
        "density_mean": float(rho.mean()),
        "density_std": float(rho.std(ddof=1)) if rho.size > 1 else 0.0,
        "densities": rho,
        "r_max": r_max,
        "r2": st.r2,
        "r": np.sqrt(st.r2),
        "g_r": pooled_g(st.pair_counts, st.expected_counts),
        "neighbours4": normalised(st.neighbour_counts(4).sum(axis=0)),
        "neighbours8": normalised(st.neighbour_counts(8).sum(axis=0)),
        "cluster_sizes4": sizes[4],
        "cluster_sizes8": sizes[8],
        "cluster_mean4": float((np.arange(sizes[4].size) * sizes[4]).sum() / n_cl[4]) if n_cl[4] else None,
        "cluster_mean8": float((np.arange(sizes[8].size) * sizes[8]).sum() / n_cl[8]) if n_cl[8] else None,
        "nn_pairs_per_site": float((st.self_bonds / 2 / sites).mean()),
        "energy_per_site": energy,
        "energy_note": energy_note,
        "hamiltonian": None if hamiltonian is None else asdict(hamiltonian),
        "k": st.k,
        "S_k": sk,
    }
