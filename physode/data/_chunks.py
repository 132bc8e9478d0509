"""Whole HDF5 chunks, filtered here and written directly: shuffle, deflate, fletcher32.

HDF5 runs its filter pipeline on one thread with the zlib it was built with; on simulated float64
states, deflating is most of the time a data set takes to write. This module applies the same
three filters itself, in the pipeline's order, and hands HDF5 the finished bytes
(``write_direct_chunk``). The file is the same standard HDF5 any reader opens with its built-in
filters: only the deflate stream comes from ISA-L (the ``isal`` package), several times faster
than zlib at the same compression, where it is installed, and from zlib otherwise.

Examples
--------
>>> import zlib, numpy as np
>>> a = np.arange(4, dtype=np.float64)
>>> encoded = encode_chunk(a)
>>> fletcher32(encoded[:-4]) == int.from_bytes(encoded[-4:], "little")
True
>>> np.frombuffer(unshuffle(zlib.decompress(encoded[:-4]), 8), dtype=np.float64)
array([0., 1., 2., 3.])
"""

from __future__ import annotations

import math

import h5py
import numpy as np

from physode._errors import InternalError

try:  # the same zlib streams, several times faster
    from isal import isal_zlib as _deflate
except ImportError:  # pragma: no cover - depends on the platform's wheels
    import zlib as _deflate

__all__ = [
    "FILTERS",
    "ChunkWriter",
    "crc32",
    "encode_chunk",
    "fletcher32",
    "shuffle",
    "unshuffle",
]

#: zlib's CRC-32 of a buffer (ISA-L's, several times faster, where it is installed).
crc32 = _deflate.crc32

#: The filters of every per-trajectory dataset, as h5py's ``create_dataset`` takes them. gzip
#: level 1: simulated float64 states barely compress (about 13 %, the same at level 4).
FILTERS = {"compression": "gzip", "compression_opts": 1, "shuffle": True, "fletcher32": True}
_LEVEL = 1
_PIPELINE = (h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_FLETCHER32)
_MODULUS = 0xFFFF
# Below this many 16-bit words, n * sum1 - sum_i i * w_i stays within int64.
_EXACT_WORDS = 1 << 24


def shuffle(a: np.ndarray) -> bytes:
    """HDF5's shuffle filter: byte 0 of every element, then byte 1 of every element, ..."""
    return _shuffled(a).tobytes()


def _shuffled(a: np.ndarray) -> np.ndarray:
    """:func:`shuffle`'s bytes as a contiguous uint8 array (one copy fewer)."""
    a = np.ascontiguousarray(a)
    return np.ascontiguousarray(a.reshape(-1).view(np.uint8).reshape(-1, a.itemsize).T)


def unshuffle(data: bytes, itemsize: int) -> bytes:
    """The inverse of :func:`shuffle` for elements of ``itemsize`` bytes."""
    b = np.frombuffer(data, dtype=np.uint8)
    return np.ascontiguousarray(b.reshape(itemsize, -1).T).tobytes()


def fletcher32(data: bytes) -> int:
    """HDF5's Fletcher-32 checksum of ``data`` (``H5_checksum_fletcher32``), bit for bit.

    HDF5 sums big-endian 16-bit words (an odd last byte is the high byte of one more word):
    ``sum1`` adds the words, ``sum2`` adds every running ``sum1``; both are folded (``(x & 0xffff)
    + (x >> 16)``) after every block of 360 words and once more at the end. Folding keeps a value
    modulo 65535 and never turns a positive value into 0, and the final values are below 65536,
    so each sum is 0 for all-zero data and otherwise the residue modulo 65535 written in
    ``1 .. 65535``. That is computed here in a few vectorised operations.
    """
    if len(data) % 2:
        data = bytes(data) + b"\0"
    words = np.frombuffer(data, dtype=">u2").astype(np.int64)
    sum1 = int(words.sum())
    if sum1 == 0:  # all-zero data
        return 0
    # Word i (of n) is part of n - i running sums: sum2 = n * sum1 - sum_i i * w_i, exact in
    # int64 below _EXACT_WORDS words (our chunks are about 1 MiB); beyond, weights mod 65535.
    n = words.size
    if n < _EXACT_WORDS:
        sum2 = n * sum1 - int(np.dot(_indices(n), words))
    else:
        weights = np.arange(n, 0, -1, dtype=np.int64) % _MODULUS
        sum2 = int((words * weights).sum() % _MODULUS)
    return ((sum2 - 1) % _MODULUS + 1) << 16 | ((sum1 - 1) % _MODULUS + 1)


_INDICES = np.arange(0, dtype=np.int64)


def _indices(n: int) -> np.ndarray:
    """``0, 1, ..., n - 1`` as int64, from one cached array."""
    global _INDICES
    if _INDICES.size < n:
        _INDICES = np.arange(max(n, 2 * _INDICES.size), dtype=np.int64)
    return _INDICES[:n]


def encode_chunk(a: np.ndarray) -> bytes:
    """The bytes HDF5 stores for chunk ``a`` under :data:`FILTERS`: shuffled, deflated, and
    followed by the little-endian Fletcher-32 checksum of the deflated bytes."""
    body = _deflate.compress(_shuffled(a), _LEVEL)
    return body + fletcher32(body).to_bytes(4, "little")


def _pipeline(dataset: h5py.Dataset) -> tuple[int, ...]:
    plist = dataset.id.get_create_plist()
    return tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))


class ChunkWriter:
    """Writes rows of a dataset chunked along its first dimension, a whole chunk at a time.

    Rows may arrive in any order and in blocks that straddle chunks: a chunk is encoded and
    written once all its rows are in; rows of incomplete chunks wait in memory. A dataset with
    another filter pipeline than :data:`FILTERS` is written through h5py as usual.

    Examples
    --------
    >>> import h5py, numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.h5")
    >>> with h5py.File(path, "w") as f:
    ...     d = f.create_dataset("x", shape=(5, 2), dtype="f8", chunks=(2, 2), **FILTERS)
    ...     writer = ChunkWriter(d)
    ...     writer.write(3, np.ones((2, 2)))
    ...     writer.write(0, np.zeros((3, 2)))
    ...     writer.close()
    >>> with h5py.File(path) as f:
    ...     f["x"][:, 0]
    array([0., 0., 0., 1., 1.])
    """

    def __init__(self, dataset: h5py.Dataset):
        self.dataset = dataset
        chunks = dataset.chunks
        self.rows = chunks[0] if chunks else None
        self.direct = (
            chunks is not None
            and chunks[1:] == dataset.shape[1:]
            and _pipeline(dataset) == _PIPELINE
        )
        self._waiting: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def write(self, start: int, values: np.ndarray) -> None:
        """Write ``values`` to rows ``start, start + 1, ...``."""
        values = np.asarray(values, dtype=self.dataset.dtype)
        stop = start + len(values)
        if not self.direct:
            self.dataset[start:stop] = values
            return
        rows, n = self.rows, self.dataset.shape[0]
        for index in range(start // rows, math.ceil(stop / rows)):
            first, last = index * rows, min((index + 1) * rows, n)
            lo, hi = max(start, first), min(stop, last)
            part = values[lo - start : hi - start]
            if (lo, hi) == (first, last) and index not in self._waiting:
                self._emit(index, part)
                continue
            if index not in self._waiting:
                shape = (last - first, *values.shape[1:])
                self._waiting[index] = (np.zeros(shape, values.dtype), np.zeros(shape[0], bool))
            buffer, filled = self._waiting[index]
            buffer[lo - first : hi - first] = part
            filled[lo - first : hi - first] = True
            if filled.all():
                del self._waiting[index]
                self._emit(index, buffer)

    def _emit(self, index: int, rows: np.ndarray) -> None:
        if len(rows) < self.rows:  # the last chunk: HDF5 stores chunks whole, padded
            pad = np.zeros((self.rows - len(rows), *rows.shape[1:]), rows.dtype)
            rows = np.concatenate([rows, pad])
        offset = (index * self.rows,) + (0,) * (rows.ndim - 1)
        self.dataset.id.write_direct_chunk(offset, encode_chunk(rows))

    def close(self) -> None:
        """Check that no chunk is left incomplete."""
        if self._waiting:
            first = min(self._waiting) * self.rows
            raise InternalError(
                f"{self.dataset.name}: rows from {first} on were never completely written; "
                "a bug in physode: please report it"
            )
