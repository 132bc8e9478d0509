"""Chunks filtered by physode itself (shuffle, deflate, fletcher32) are what HDF5 would store."""

from __future__ import annotations

import zlib

import h5py
import numpy as np
import pytest

import physode
from physode.data import _chunks
from physode.data._chunks import FILTERS, ChunkWriter, encode_chunk, fletcher32, shuffle, unshuffle

RNG = np.random.default_rng(0)
LENGTHS = (1, 2, 3, 719, 720, 721, 2 * 0xFFFF, 2 * 0xFFFF + 1, 1 << 20)


def _hdf5_checksum(tmp_path, data: np.ndarray) -> tuple[bytes, int]:
    with h5py.File(tmp_path / "f.h5", "w") as f:
        d = f.create_dataset("d", data=data, chunks=data.shape, fletcher32=True)
        raw = d.id.read_direct_chunk((0,) * data.ndim)[1]
    return raw[:-4], int.from_bytes(raw[-4:], "little")


@pytest.mark.parametrize("n", LENGTHS)
def test_fletcher32_is_hdf5s_for_random_bytes(tmp_path, n):
    body, checksum = _hdf5_checksum(tmp_path, RNG.integers(0, 256, n, dtype=np.uint8))
    assert fletcher32(body) == checksum


@pytest.mark.parametrize("exact_words", [_chunks._EXACT_WORDS, 0], ids=["int64", "modular"])
def test_both_ways_of_summing_give_hdf5s_checksum(tmp_path, monkeypatch, exact_words):
    monkeypatch.setattr(_chunks, "_EXACT_WORDS", exact_words)
    for n in (3, 720, 100_001):
        body, checksum = _hdf5_checksum(tmp_path, RNG.integers(0, 256, n, dtype=np.uint8))
        assert fletcher32(body) == checksum


@pytest.mark.parametrize("n", (2, 720, 2 * 0xFFFF, 200_001))
def test_fletcher32_is_hdf5s_where_the_sums_wrap(tmp_path, n):
    # All-ones words make both sums multiples of 65535: HDF5 writes those as 0xffff, not 0.
    for data in (np.full(n, 255, np.uint8), np.r_[np.zeros(n, np.uint8), 1].astype(np.uint8)):
        body, checksum = _hdf5_checksum(tmp_path, data)
        assert fletcher32(body) == checksum
    assert fletcher32(bytes(10)) == _hdf5_checksum(tmp_path, np.zeros(10, np.uint8))[1] == 0


def test_shuffle_is_its_own_inverse_and_groups_bytes():
    a = np.array([1.0, 2.0, 3.0])
    shuffled = shuffle(a)
    assert shuffled[:3] == bytes(a.view(np.uint8)[0::8])
    assert np.array_equal(np.frombuffer(unshuffle(shuffled, 8)), a)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.int8, np.uint8])
def test_an_encoded_chunk_reads_back_through_hdf5_with_its_checksum(tmp_path, dtype):
    data = (RNG.standard_normal((7, 5, 3)) * 100).astype(dtype)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        d = f.create_dataset("d", shape=data.shape, dtype=dtype, chunks=data.shape, **FILTERS)
        d.id.write_direct_chunk((0, 0, 0), encode_chunk(data))
    with h5py.File(tmp_path / "f.h5") as f:
        assert np.array_equal(f["d"][()], data)


def test_a_damaged_encoded_chunk_fails_its_checksum(tmp_path):
    data = RNG.standard_normal((64, 4))
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("d", shape=data.shape, dtype="f8", chunks=data.shape, **FILTERS)
        d.id.write_direct_chunk((0, 0), encode_chunk(data))
        offset = d.id.get_chunk_info(0).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 20] ^= 0xFF
    path.write_bytes(bytes(raw))
    with h5py.File(path) as f, pytest.raises(OSError):
        f["d"][()]


def test_zlib_and_isal_streams_both_decode(monkeypatch):
    data = RNG.standard_normal(1000)
    for deflate in (zlib, _chunks._deflate):
        monkeypatch.setattr(_chunks, "_deflate", deflate)
        encoded = encode_chunk(data)
        assert fletcher32(encoded[:-4]) == int.from_bytes(encoded[-4:], "little")
        assert np.array_equal(np.frombuffer(unshuffle(zlib.decompress(encoded[:-4]), 8)), data)


def test_chunk_writer_takes_rows_in_any_order_across_chunk_boundaries(tmp_path):
    data = RNG.standard_normal((23, 4, 2))
    with h5py.File(tmp_path / "f.h5", "w") as f:
        d = f.create_dataset("d", shape=data.shape, dtype="f8", chunks=(5, 4, 2), **FILTERS)
        writer = ChunkWriter(d)
        assert writer.direct
        for start, stop in ((7, 16), (20, 23), (0, 7), (16, 20)):
            writer.write(start, data[start:stop])
        writer.close()
    with h5py.File(tmp_path / "f.h5") as f:
        assert np.array_equal(f["d"][()], data)
        assert f["d"].id.get_num_chunks() == 5


def test_chunk_writer_refuses_to_close_with_rows_missing(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        d = f.create_dataset("d", shape=(10,), dtype="f8", chunks=(4,), **FILTERS)
        writer = ChunkWriter(d)
        writer.write(0, np.ones(6))
        # A physode bug, said as one (a PhysodeError since 2026-12-07; a RuntimeError still).
        with pytest.raises(physode.InternalError, match="rows from 4 on .*a bug in physode") as e:
            writer.close()
        assert isinstance(e.value, RuntimeError)


def test_chunk_writer_falls_back_to_h5py_for_other_filters(tmp_path):
    data = np.arange(10.0)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        d = f.create_dataset("d", shape=(10,), dtype="f8", chunks=(4,), compression="gzip")
        writer = ChunkWriter(d)
        assert not writer.direct
        writer.write(3, data[3:])
        writer.write(0, data[:3])
        writer.close()
        assert np.array_equal(d[()], data)


@pytest.mark.parametrize("shape", [(10,), (10, 0)])
def test_chunk_writer_writes_an_unchunked_dataset_through_h5py(tmp_path, shape):
    # A system without parameters stores params of shape (N, 0), which HDF5 cannot chunk.
    data = np.arange(float(np.prod(shape))).reshape(shape)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        d = f.create_dataset("d", shape=shape, dtype="f8")
        writer = ChunkWriter(d)
        assert not writer.direct
        writer.write(4, data[4:])
        writer.write(0, data[:4])
        writer.close()
        assert d.shape == shape and np.array_equal(d[()], data)
