"""Tests of the HDF5 store: every field round-trips; foreign, damaged, newer files are refused."""

from __future__ import annotations

import copy
import json
import multiprocessing
import pickle
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor

import h5py
import numpy as np
import pytest
import torch

import physode
import physode.systems
from physode.cli import main
from physode.data import FORMAT_NAME, FORMAT_VERSION, TrajectoryDataset, check, load
from physode.data._chunks import ChunkWriter
from physode.data._store import Chunk, H5Array, read_chunk, sha256_text, write_chunk, write_store

N, P, N_STATE, N_PARAMS = 7, 9, 2, 2


def _synthetic_chunks(rng, noisy: bool, sizes=(3, 3, 1)):
    start = 0
    for size in sizes:
        stop = start + size
        # trajectories 1 and 4 failed, each with a random cause
        failed = np.arange(start, stop) % 3 == 1
        status = np.where(failed, rng.integers(1, 4, size=size), 0).astype(np.int8)
        yield Chunk(
            start=start,
            stop=stop,
            states=rng.normal(size=(size, P, N_STATE)),
            derivatives=rng.normal(size=(size, P, N_STATE)),
            params=rng.uniform(0.5, 2.0, size=(size, N_PARAMS)),
            status=status,
            n_steps=rng.integers(1, 10**6, size=size),
            n_rejected=rng.integers(0, 10**4, size=size),
            nfe=rng.integers(1, 10**7, size=size),
            # a random drift bit; the failure bit agrees with the status, as the reader demands
            flags=((rng.integers(0, 4, size=size) & 2) | failed).astype(np.uint8),
            invariants={"energy": rng.normal(size=(size, P)), "other": rng.normal(size=(size, P))},
            noisy_states=rng.normal(size=(size, P, N_STATE)) if noisy else None,
            t_final=rng.uniform(0, 2, size=size),
            drift={"energy": rng.uniform(0, 1e-6, size=size), "other": rng.normal(size=size)},
        )
        start = stop


def _write_synthetic(path, *, dtype="float64", noisy=True, seed=0, **attr_overrides):
    spec = physode.systems.path("harmonic_oscillator").read_text()
    chunks = list(_synthetic_chunks(np.random.default_rng(seed), noisy))
    attrs = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "physode_version": physode.__version__,
        "system_name": "harmonic_oscillator",
        "system_spec": spec,
        "system_spec_sha256": sha256_text(spec),
        "state_names": json.dumps(["q", "p"]),
        "parameter_names": json.dumps(["m", "k"]),
        "invariant_names": json.dumps(["energy", "other"]),
        "solver": json.dumps({"method": "dop853", "rtol": 1e-10}),
        "seed": 11,
        "command_line": "physode simulate harmonic_oscillator ...",
        **attr_overrides,
    }
    split = {"train": np.array([0, 2, 3, 5]), "val": np.array([1, 6]), "test": np.array([4])}
    write_store(
        path,
        t=np.linspace(0, 2, P),
        n_trajectories=N,
        n_state=N_STATE,
        n_params=N_PARAMS,
        invariant_names=["energy", "other"],
        dtype=dtype,
        noisy=noisy,
        split=split,
        attrs=attrs,
        chunks=reversed(chunks),  # any order
        chunk_size=3,
    )
    return chunks, split, attrs


@pytest.fixture
def stored(tmp_path):
    path = tmp_path / "synthetic.h5"
    chunks, split, attrs = _write_synthetic(path)
    return path, chunks, split, attrs


def _stack(chunks, name):
    return np.concatenate([getattr(c, name) for c in chunks])


def test_every_field_round_trips_exactly(stored):
    path, chunks, split, attrs = stored
    with load(path) as data:
        np.testing.assert_array_equal(data.t, np.linspace(0, 2, P))
        for name in ("states", "derivatives", "noisy_states"):
            np.testing.assert_array_equal(getattr(data, name)[()], _stack(chunks, name))
        for name in ("params", "status", "n_steps", "n_rejected", "nfe", "flags"):
            np.testing.assert_array_equal(getattr(data, name), _stack(chunks, name))
        np.testing.assert_array_equal(data.t_final, _stack(chunks, "t_final"))
        for name in ("energy", "other"):
            expected = np.concatenate([c.invariants[name] for c in chunks])
            np.testing.assert_array_equal(data.invariants[name][()], expected)
            expected = np.concatenate([c.drift[name] for c in chunks])
            np.testing.assert_array_equal(data.drift[name], expected)
        for name, indices in split.items():
            np.testing.assert_array_equal(data.split_indices(name), indices)
        np.testing.assert_array_equal(data.split_indices("all"), np.arange(N))
        assert data.state_names == ["q", "p"] and data.parameter_names == ["m", "k"]
        assert data.seed == 11 and data.solver == {"method": "dop853", "rtol": 1e-10}
        for key, value in attrs.items():
            assert data.attrs[key] == value, key
        assert data.system.name == "harmonic_oscillator"
        assert data.system.state_names == ["q", "p"]


def test_lazy_arrays_read_only_the_selection_and_behave_like_arrays(stored):
    path, chunks, _, _ = stored
    with load(path) as data:
        assert data.states.shape == (N, P, N_STATE) and len(data.states) == N
        np.testing.assert_array_equal(data.states[4, 2:5], _stack(chunks, "states")[4, 2:5])
        np.testing.assert_array_equal(np.asarray(data.derivatives), _stack(chunks, "derivatives"))
        assert "states" in repr(data.states)


def test_float32_storage_rounds_the_states_and_keeps_parameters_and_invariants_float64(tmp_path):
    chunks, _, _ = _write_synthetic(tmp_path / "f32.h5", dtype="float32")
    with load(tmp_path / "f32.h5") as data:
        assert data.states.dtype == np.float32 and data.derivatives.dtype == np.float32
        assert data.params.dtype == np.float64 and data.invariants["energy"].dtype == np.float64
        np.testing.assert_array_equal(data.states[()], _stack(chunks, "states").astype(np.float32))


def test_datasets_are_chunked_by_trajectories_compressed_and_checksummed(stored):
    path = stored[0]
    with h5py.File(path) as f:
        for name in ("states", "derivatives", "noisy_states", "invariants/energy", "params"):
            dataset = f[name]
            assert dataset.chunks[1:] == dataset.shape[1:], name  # whole trajectories per chunk
            assert 1 <= dataset.chunks[0] <= 3
            assert dataset.compression == "gzip" and dataset.fletcher32, name


def test_a_file_without_noise_has_no_noisy_states(tmp_path):
    _write_synthetic(tmp_path / "clean.h5", noisy=False)
    with load(tmp_path / "clean.h5") as data:
        assert data.noisy_states is None


def test_a_missing_file_is_refused_by_name(tmp_path):
    with pytest.raises(physode.DataFormatError, match="missing.h5: no such file"):
        load(tmp_path / "missing.h5")


def test_a_folder_is_refused_as_a_folder_not_as_missing(tmp_path):
    with pytest.raises(physode.DataFormatError, match="is a folder, not a data set file"):
        load(tmp_path)


def test_a_file_that_is_not_hdf5_is_refused(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("year,hare,lynx\n1900,30,4\n")
    with pytest.raises(physode.DataFormatError, match="not an HDF5 file"):
        load(path)


def test_a_foreign_hdf5_file_is_refused(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f["states"] = np.zeros((2, 3, 4))
        f.attrs["format"] = "pdebench"
    # Arrays of one's own are readable through Trajectories, which the message names.
    with pytest.raises(
        physode.DataFormatError,
        match=r"not a physode data set.*'pdebench'.*physode.train.Trajectories\(t, states\)",
    ):
        load(path)


def test_a_newer_format_version_is_refused_with_the_versions_named(tmp_path):
    path = tmp_path / "future.h5"
    _write_synthetic(path, format_version=FORMAT_VERSION + 1)
    expected = f"format version {FORMAT_VERSION + 1}, newer than this physode reads"
    with pytest.raises(physode.DataFormatError, match=expected):
        load(path)


def test_a_truncated_file_is_refused(stored, tmp_path):
    path = tmp_path / "truncated.h5"
    data = stored[0].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(physode.DataFormatError, match="damaged or truncated"):
        load(path)


def test_a_file_another_process_holds_open_for_writing_is_named_as_such_not_as_damaged(
    stored, capsys
):
    """A user's h5py.File(path, "a") in another process: HDF5 refuses to open the file for its
    lock, which was reported as a damaged or truncated file."""
    import subprocess
    import sys

    path = stored[0]
    holder = (
        "import sys, h5py\n"
        "f = h5py.File(sys.argv[1], 'a')\n"
        "print('open', flush=True)\n"
        "sys.stdin.read()\n"
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", holder, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline() == "open\n"
        said = "another process holds it open for writing"
        with pytest.raises(physode.DataFormatError, match=said) as refused:
            load(path)
        assert "damaged" not in str(refused.value)
        with pytest.raises(physode.DataFormatError, match=said):
            TrajectoryDataset(path)
        assert main(["check", str(path)]) == 2
        assert said in capsys.readouterr().err
    finally:
        writer.communicate("")
    with load(path) as data:  # once closed, the file reads as ever
        assert data.states.shape == (N, P, N_STATE)


def test_a_file_system_without_locks_is_named_with_the_setting_that_reads_it(stored, monkeypatch):
    def no_locks(*args, **kwargs):
        raise OSError(
            "Unable to synchronously open file (unable to lock file, errno = 38, error "
            "message = 'Function not implemented')"
        )

    monkeypatch.setattr(h5py, "File", no_locks)
    with pytest.raises(physode.DataFormatError, match="HDF5_USE_FILE_LOCKING=FALSE"):
        load(stored[0])


def _flip_a_byte(path, dataset: str, chunk: int = 0) -> None:
    with h5py.File(path) as f:
        offset = f[dataset].id.get_chunk_info(chunk).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + 20)
        byte = handle.read(1)
        handle.seek(offset + 20)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_garbled_trajectory_data_fail_their_checksum_when_read(stored, tmp_path):
    path = tmp_path / "garbled.h5"
    shutil.copy(stored[0], path)
    _flip_a_byte(path, "states")
    with load(path) as data:  # the structure is intact; the damage shows when the chunk is read
        with pytest.raises(physode.DataFormatError, match="dataset /states is damaged"):
            data.states[0]
        data.states[N - 1]  # other chunks still read


def test_a_file_whose_writer_did_not_finish_is_refused(stored):
    with h5py.File(stored[0], "r+") as f:
        del f.attrs["complete"]
    with pytest.raises(physode.DataFormatError, match="incomplete"):
        load(stored[0])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: f.__delitem__("derivatives"), "missing datasets derivatives"),
        (lambda f: f.attrs.__setitem__("system_spec", "tampered"), "does not match its sha256"),
        (lambda f: f.attrs.__setitem__("state_names", '["q"]'), r"states has shape \(7, 9, 2\)"),
        (lambda f: f["split/test"].__setitem__(0, 0), "the split lists trajectories 0 more than"),
    ],
)
def test_structural_damage_is_named_in_one_line(stored, damage, message):
    with h5py.File(stored[0], "r+") as f:
        damage(f)
    with pytest.raises(physode.DataFormatError, match=message) as error:
        load(stored[0])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "dataset", ["derivatives", "noisy_states", "invariants/other", "solver/t_final", "drift/other"]
)
def test_check_reads_every_dataset_so_damage_anywhere_is_found(stored, tmp_path, dataset):
    path = tmp_path / "garbled.h5"
    shutil.copy(stored[0], path)
    _flip_a_byte(path, dataset, chunk=1)
    with pytest.raises(physode.DataFormatError, match=f"dataset /{dataset} is damaged"):
        check(path)


def _set_attr(name, value):
    return lambda f: f.attrs.__setitem__(name, value)


def _replace(name, value):
    def damage(f):
        del f[name]
        f[name] = value

    return damage


def _retype(name, dtype):
    return lambda f: _replace(name, f[name][()].astype(dtype))(f)


def _reverse_t(f):
    f["t"][...] = f["t"][()][::-1]


def _add_invariant(f):
    f["invariants/bogus"] = np.zeros((N, P))


def _add_drift(f):
    f["drift/bogus"] = np.zeros(N)


def _drift_as_a_dataset(f):
    del f["drift"]
    f["drift"] = np.zeros(N)


def _cut(points=None, trajectories=None):
    """Every dataset cut to its first ``points`` output times or ``trajectories`` rows, so that
    the file's sizes agree with one another."""

    def damage(f):
        names = []
        f.visit(names.append)  # visit stops at the first callback that returns a value
        for name in [name for name in names if isinstance(f[name], h5py.Dataset)]:
            values = f[name][()]
            if name == "t":
                values = values[:points]
            elif name.startswith("split/"):
                values = values[values < (N if trajectories is None else trajectories)]
            else:
                values = values[:trajectories]
                if values.ndim >= 2 and name != "params":
                    values = values[:, :points]
            del f[name]
            f[name] = values

    return damage


def _alter_text_in_file(path, old: bytes, new: bytes) -> None:
    # As a flipped bit on disk would: one attribute's stored text changes, nothing else.
    data = path.read_bytes()
    assert data.count(old) == 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new))


def _non_utf8_spec(f):
    # h5py decodes the bad byte to a lone surrogate, which cannot be hashed as UTF-8.
    f.attrs.create("system_spec", b"x = \xff", dtype=h5py.string_dtype("utf-8"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_set_attr("format", np.array([FORMAT_NAME, "x"], dtype=object)),
         r"not a physode data set \(format an array of shape \(2,\)"),
        (_set_attr("format_version", np.array([1, 1])), "'format_version' is an array"),
        (_set_attr("format_version", -1), "'format_version' is -1, expected an integer >= 1"),
        (_set_attr("format_version", 1.0), "'format_version' is 1.0"),
        (_set_attr("complete", np.array([True, False])), "'complete' mark is an array"),
        (_set_attr("complete", "no"), "'complete' mark is 'no', expected True"),
        (_set_attr("system_spec", 5), "attribute 'system_spec' is 5, expected text"),
        (_non_utf8_spec, "attribute 'system_spec' is not UTF-8 text"),
        (_set_attr("invariant_names", '"energy"'),
         "attribute 'invariant_names' is '\"energy\"', expected a JSON list"),
        (_set_attr("state_names", "[1, 2]"), "'state_names' is '\\[1, 2\\]', expected a JSON list"),
        (_set_attr("state_names", '["q", "q"]'), "list of distinct names"),
        (_set_attr("parameter_names", "5"), "'parameter_names' is '5'"),
        (_set_attr("solver", "{"), "attribute 'solver' is '{', expected a JSON object"),
        (_set_attr("seed", "abc"), "attribute 'seed' is 'abc', expected an integer >= 0"),
        (_set_attr("seed", -3), "attribute 'seed' is -3"),
        (_replace("states", 1.0), r"states has shape \(\), expected \(N, P, n_state\)"),
        (_replace("t", 1.0), r"t has shape \(\), expected \(P,\)"),
        # No physode writes fewer than 2 output times or no trajectory; such files, consistent
        # otherwise, were read (and check stopped with an internal error on P = 0).
        (_cut(points=1), r"t has shape \(1,\), expected at least 2 output times"),
        (_cut(points=0), r"t has shape \(0,\), expected at least 2 output times"),
        (_cut(trajectories=0), r"states has shape \(0, 9, 2\), expected at least 1 trajectory"),
        (_replace("split/val", np.array([[1, 6]])), r"split/val has shape \(1, 2\)"),
        (_replace("split/val", np.array([1.0, 6.0])), "split/val holds float64, expected int"),
        (_replace("params", np.full((N, N_PARAMS), b"a")), r"params holds \|S1, expected float"),
        (_retype("states", np.float16), "states holds float16, expected float64 or float32"),
        (_retype("derivatives", np.float32),
         "derivatives holds float32, expected float64, the type of /states"),
        (_retype("noisy_states", np.float32),
         "noisy_states holds float32, expected float64, the type of /states"),
        (_retype("t", np.float32), "t holds float32, expected float64"),
        (_retype("params", np.float32), "params holds float32, expected float64"),
        (_retype("invariants/energy", np.float32), "invariants/energy holds float32"),
        (_retype("flags", np.int64), "flags holds int64, expected uint8"),
        (_retype("solver/nfe", np.int32), "solver/nfe holds int32, expected int64"),
        (_retype("split/val", np.int32), "split/val holds int32, expected int64"),
        (_set_attr("invariant_names", '["energy"]'),
         r"/invariants holds other, which attribute 'invariant_names' \(\[.energy.\]\) does "),
        (_add_invariant, "/invariants holds bogus, which attribute 'invariant_names'"),
        (_retype("solver/t_final", np.float32), "solver/t_final holds float32, expected float64"),
        (_replace("solver/t_final", np.zeros(N - 1)),
         r"solver/t_final has shape \(6,\), expected \(7,\)"),
        (_retype("drift/energy", np.float32), "drift/energy holds float32, expected float64"),
        (_replace("drift/other", np.zeros((N, P))), r"drift/other has shape \(7, 9\), expected"),
        (lambda f: f.__delitem__("drift/other"), "missing datasets drift/other"),
        (_add_drift, "/drift holds bogus, which attribute 'invariant_names'"),
        (_drift_as_a_dataset, "drift is not a group, expected one dataset per invariant"),
        (_set_attr("system_name", "kepler"),
         "attribute 'system_name' is 'kepler', expected 'harmonic_oscillator', the name the "
         "stored specification gives"),
        (_reverse_t, r"t is not strictly increasing \(t\[0\] = 2.0, t\[1\] = 1.75\)"),
        (_replace("t", np.array([0.0, 1, 2, 3, 3, 4, 5, 6, 7])),
         r"t is not strictly increasing \(t\[3\] = 3.0, t\[4\] = 3.0\)"),
        (_replace("t", np.array([0.0, 1, 2, 3, np.nan, 4, 5, 6, 7])), "t holds values that are"),
        (_replace("split/test", np.array([], dtype=np.int64)),
         r"the split leaves out trajectories 4, expected every one of 0..6 in exactly one of "),
        (_replace("split/val", np.array([1, 6, 6])),
         "split/val is not sorted ascending without repeats; the split lists trajectories 6 "
         "more than once"),
        (_replace("split/val", np.array([6, 1])), "split/val is not sorted ascending"),
        (_replace("split/test", np.array([4, 9])), r"split indices outside 0..6"),
    ],
)  # fmt: skip
def test_a_mistyped_attribute_or_dataset_is_refused_by_load_and_by_check(
    stored, capsys, damage, message
):
    path = stored[0]
    _refused_once_damaged(path, damage, message, prefix=str(path))
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"physode check: error: {path}")


def _refused_once_damaged(path, damage, message: str, prefix: str) -> None:
    """Apply ``damage`` to the file; ``load`` then refuses it in one line starting ``prefix``."""
    with h5py.File(path, "r+") as f:
        damage(f)
    with pytest.raises(physode.DataFormatError, match=message) as error:
        load(path)
    assert str(error.value).startswith(prefix) and "\n" not in str(error.value)


def test_text_attributes_altered_on_disk_are_refused_not_read_as_other_text(stored, capsys):
    # Text attributes are fixed-length, inside checksummed metadata. Variable-length text lived
    # in HDF5's global heap, which has no checksum: '["m", "k"]' read back as '["m", "j"]'.
    path = stored[0]
    _alter_text_in_file(path, b'["m", "k"]', b'["m", "j"]')
    with pytest.raises(physode.DataFormatError, match="damaged attributes .*checksum"):
        load(path)
    assert main(["check", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_text_attributes_are_stored_fixed_length_and_unicode_round_trips(tmp_path):
    path = tmp_path / "unicode.h5"
    _write_synthetic(path, command_line="physode simulate pendule --note 'θ̈ = −g/ℓ sin θ'")
    with h5py.File(path, "r") as f:
        stored_type = f.attrs.get_id("command_line").get_type()
        assert not stored_type.is_variable_str()
        assert stored_type.get_cset() == h5py.h5t.CSET_UTF8
    with load(path) as data:
        assert data.attrs["command_line"] == "physode simulate pendule --note 'θ̈ = −g/ℓ sin θ'"
        assert data.attrs["system_name"] == "harmonic_oscillator"


@pytest.mark.parametrize(
    "store",
    [
        lambda attrs: attrs.__setitem__("note", np.bytes_(b"caf\xe9")),  # fixed-length
        lambda attrs: attrs.create("note", b"caf\xe9", dtype=h5py.string_dtype("utf-8")),
    ],
    ids=["fixed-length", "variable-length"],
)
def test_a_users_own_attribute_whose_text_is_not_utf8_is_read_as_bytes(stored, capsys, store):
    # Latin-1 text in an attribute the layout does not define made the whole file unreadable:
    # "damaged: attribute 'note' is not UTF-8 text", from load and from check.
    path = stored[0]
    status = main(["check", str(path)])  # the synthetic data hold flagged trajectories: 1
    report = capsys.readouterr().out
    with h5py.File(path, "r+") as f:
        store(f.attrs)
    with load(path) as data:
        assert data.attrs["note"] == b"caf\xe9"
        assert data.attrs["system_name"] == "harmonic_oscillator"
    assert main(["check", str(path)]) == status != 2
    assert capsys.readouterr().out == report


def test_a_layout_attribute_whose_text_is_not_utf8_is_still_refused(stored):
    path = stored[0]
    with h5py.File(path, "r+") as f:
        f.attrs["command_line"] = np.bytes_(b"physode simulate caf\xe9")
    with pytest.raises(physode.DataFormatError, match="attribute 'command_line' is not UTF-8"):
        load(path)


def test_an_unreadable_attribute_after_the_format_ones_is_refused_as_damaged(
    stored, capsys, monkeypatch
):
    # As a flipped bit in the heap of one text attribute does: h5py raises OSError for it alone.
    read = h5py.AttributeManager.__getitem__

    def damaged(self, name):
        if name == "command_line":
            raise OSError("Can't synchronously read data (bad heap pointer)")
        return read(self, name)

    monkeypatch.setattr(h5py.AttributeManager, "__getitem__", damaged)
    with pytest.raises(physode.DataFormatError, match="damaged attributes .*bad heap pointer"):
        load(stored[0])
    assert main(["check", str(stored[0])]) == 2
    assert capsys.readouterr().err.startswith("physode check: error: ")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("parameter_names", '["k", "m"]', r"parameter_names \['k', 'm'\] but the specification's"),
        ("state_names", '["x", "v"]', r"state_names \['x', 'v'\] but the specification's"),
    ],
)
def test_names_that_disagree_with_the_stored_specification_are_refused(
    stored, capsys, name, value, message
):
    path = stored[0]
    with h5py.File(path, "r+") as f:
        f.attrs[name] = value
    with load(path) as data:  # the names fit the arrays; they contradict the system
        with pytest.raises(physode.DataFormatError, match=message):
            _ = data.system
    assert main(["check", str(path)]) == 2
    assert message.split(" ")[0] in capsys.readouterr().err


def test_seed_and_solver_are_checked_when_the_file_is_opened(stored):
    path = stored[0]
    with h5py.File(path, "r+") as f:
        del f.attrs["seed"], f.attrs["solver"]
    with load(path) as data:
        with pytest.raises(physode.DataFormatError, match="records no 'seed'"):
            _ = data.seed
        with pytest.raises(physode.DataFormatError, match="records no 'solver'"):
            _ = data.solver


def test_a_stored_specification_that_is_not_a_valid_system_is_refused(stored):
    path = stored[0]
    spec = "this is not toml ["
    with h5py.File(path, "r+") as f:
        f.attrs["system_spec"], f.attrs["system_spec_sha256"] = spec, sha256_text(spec)
    with load(path) as data:
        with pytest.raises(physode.DataFormatError, match="specification text of") as error:
            _ = data.system
    assert "physode-spec-" not in str(error.value)  # no temporary file name


def test_an_interrupted_write_removes_its_half_written_file(tmp_path, monkeypatch):
    def interrupted(self, start, values):
        raise KeyboardInterrupt

    monkeypatch.setattr(ChunkWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _write_synthetic(tmp_path / "half.h5")
    assert list(tmp_path.iterdir()) == []


def test_chunks_that_leave_trajectories_unwritten_are_a_physode_error(tmp_path, monkeypatch):
    # The chunks physode hands the writer must cover every trajectory; where they do not, the
    # error says it is physode's bug (a bare RuntimeError before 2026-12-07), and no file is left.
    whole = _synthetic_chunks
    monkeypatch.setitem(globals(), "_synthetic_chunks", lambda *args: list(whole(*args))[::2])
    with pytest.raises(physode.InternalError, match=r"left trajectories unwritten, first "
                       r"\[3, 4, 5\]; a bug in physode") as caught:  # fmt: skip
        _write_synthetic(tmp_path / "holed.h5")
    assert isinstance(caught.value, RuntimeError)
    assert list(tmp_path.iterdir()) == []


def test_arrays_read_after_the_file_is_closed_say_so(stored):
    path = stored[0]
    with load(path) as data:
        pass
    assert "trajectories=7" in repr(data) and data.states.shape == (N, P, N_STATE)
    for array in (data.states, data.invariants["energy"]):
        with pytest.raises(physode.InvalidArgumentError, match="the file is closed"):
            array[0]


def _states_and_split(data) -> tuple[np.ndarray, np.ndarray]:
    return data.states[[4, 1]], data.split_indices("train")


def test_a_loaded_data_set_pickles_to_a_worker_and_deep_copies_with_a_handle_of_its_own(stored):
    # A user's own Dataset holding load(path), sent to a spawned DataLoader worker, failed:
    # "TypeError: h5py objects cannot be pickled".
    path, chunks, split, _ = stored
    context = multiprocessing.get_context("forkserver")  # pickles its arguments, as spawn does
    with load(path) as data, ProcessPoolExecutor(1, mp_context=context) as pool:
        states, train = pool.submit(_states_and_split, data).result()
        copies = [pickle.loads(pickle.dumps(data)), copy.deepcopy(data)]
    np.testing.assert_array_equal(states, _stack(chunks, "states")[[4, 1]])
    np.testing.assert_array_equal(train, split["train"])
    for twin in copies:  # open after the original closed
        np.testing.assert_array_equal(twin.states[()], _stack(chunks, "states"))
        assert twin.path == path and twin.attrs["seed"] == 11
        twin.close()


def _rows(array, rows: list[int]) -> np.ndarray:
    return array[rows]


def test_a_lazy_array_pickles_to_a_worker_and_deep_copies_with_a_handle_of_its_own(stored):
    # A user's Dataset holding load(path).states (not the data set) failed in a spawned
    # DataLoader worker as the data set did: "TypeError: h5py objects cannot be pickled".
    path, chunks, _, _ = stored
    states = _stack(chunks, "states")
    context = multiprocessing.get_context("forkserver")  # pickles its arguments, as spawn does
    with load(path) as data, ProcessPoolExecutor(1, mp_context=context) as pool:
        read = pool.submit(_rows, data.states, [4, 1]).result()
        copies = [pickle.loads(pickle.dumps(data.states)), copy.deepcopy(data.states)]
        name = data.invariant_names[0]
        invariant = data.invariants[name][()]
        invariant_copy = pickle.loads(pickle.dumps(data.invariants[name]))
    np.testing.assert_array_equal(read, states[[4, 1]])
    for twin in copies:  # open after the original closed
        assert (twin.shape, twin.dtype) == (states.shape, states.dtype)
        np.testing.assert_array_equal(twin[()], states)
    np.testing.assert_array_equal(invariant_copy[[2, 0]], invariant[[2, 0]])


def test_a_copy_of_a_data_set_opened_by_a_relative_path_reads_that_file_from_another_folder(
    stored, tmp_path, monkeypatch
):
    # Loaded as "synthetic.h5", then the working folder changed (a notebook's %cd): the copies
    # (a spawned DataLoader worker's) opened "synthetic.h5" there, another data set.
    path, chunks, _, _ = stored
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _write_synthetic(elsewhere / path.name, seed=1)
    monkeypatch.chdir(path.parent)
    with load(path.name) as data:
        monkeypatch.chdir(elsewhere)
        copies = [pickle.loads(pickle.dumps(data)), copy.deepcopy(data)]
        arrays = [pickle.loads(pickle.dumps(data.states)), copy.deepcopy(data.states)]
    for twin in copies:
        assert twin.path == path
        np.testing.assert_array_equal(twin.states[[4, 1]], _stack(chunks, "states")[[4, 1]])
        twin.close()
    for twin in arrays:
        np.testing.assert_array_equal(twin[[4, 1]], _stack(chunks, "states")[[4, 1]])


def test_big_endian_numbers_are_read_in_native_order_for_torch(stored):
    # As written on a big-endian machine: the same numbers, the bytes in the other order.
    path, chunks, _, _ = stored
    with h5py.File(path, "r+") as f:
        for name in ("t", "states", "params"):
            values = f[name][()]
            del f[name]
            f.create_dataset(name, data=values.astype(values.dtype.newbyteorder(">")))
    with load(path) as data:
        assert data.states.dtype == np.float64 and data.states[0].dtype.isnative
        np.testing.assert_array_equal(data.params, _stack(chunks, "params"))
    item = TrajectoryDataset(path, split="all", exclude_flagged=False)[2]
    np.testing.assert_array_equal(item["ys"].numpy(), _stack(chunks, "states")[2])
    np.testing.assert_array_equal(item["t"].numpy(), np.linspace(0, 2, P))
    assert check(path).n_trajectories == N


def test_check_accepts_numpy_integers_for_worst_and_batch(stored):
    report = check(stored[0], worst=np.int64(2), batch=np.int32(3))
    assert [len(d.worst_trajectories) for d in report.invariants] == [2]


def _chunk_file(tmp_path):
    chunk = next(_synthetic_chunks(np.random.default_rng(5), noisy=True))
    path = tmp_path / "chunk-000000.h5"
    write_chunk(path, chunk, "run")
    return path, chunk


def test_a_chunk_file_reads_back_whole_for_its_own_run_only(tmp_path):
    path, chunk = _chunk_file(tmp_path)
    back = read_chunk(path, "run")
    for name in ("states", "derivatives", "noisy_states", "params", "flags", "nfe"):
        np.testing.assert_array_equal(getattr(back, name), getattr(chunk, name))
    assert (back.start, back.stop) == (chunk.start, chunk.stop)
    assert read_chunk(path, "another run") is None


def test_a_chunk_file_damaged_on_disk_is_not_taken_for_a_finished_chunk(tmp_path):
    # resume recomputes such a chunk; storing its altered numbers would go unnoticed.
    path, chunk = _chunk_file(tmp_path)
    data = bytearray(path.read_bytes())
    offset = data.find(chunk.states.tobytes())
    assert offset > 0
    data[offset + 3] ^= 0x10
    path.write_bytes(bytes(data))
    assert read_chunk(path, "run") is None


@pytest.mark.parametrize("name", ["derivatives", "drift/energy", "t_final"])
def test_every_array_of_a_chunk_file_is_checked_by_its_crc32(tmp_path, name):
    # Chunk files store each array whole with its CRC-32: HDF5's fletcher32 filter on small
    # chunks more than doubled the time to write them and read them back.
    path, chunk = _chunk_file(tmp_path)
    with h5py.File(path) as f:
        dataset = f[name]
        assert dataset.chunks is None and not dataset.fletcher32
        offset = dataset.id.get_offset()
        assert int(dataset.attrs["crc32"]) == zlib.crc32(dataset[()].tobytes())
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    assert read_chunk(path, "run") is None


def test_a_chunk_file_without_its_checksums_is_not_taken_for_a_finished_chunk(tmp_path):
    path, _ = _chunk_file(tmp_path)
    with h5py.File(path, "a") as f:
        del f["states"].attrs["crc32"]
    assert read_chunk(path, "run") is None


def test_a_chunk_file_that_h5py_cannot_read_is_not_taken_for_a_finished_chunk(
    tmp_path, monkeypatch
):
    path, _ = _chunk_file(tmp_path)
    read = h5py.Dataset.__getitem__

    def damaged(self, key):
        if self.name == "/derivatives":  # as a garbled heap of a damaged file makes h5py raise
            raise RuntimeError("Unable to synchronously check link existence (bad heap free list)")
        return read(self, key)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", damaged)
    assert read_chunk(path, "run") is None


@pytest.mark.parametrize(
    "index",
    [-1, np.int64(2), slice(None, None, -1), slice(5, 1, -2), [3, 1], [1, 1, 0], [-1, 0],
     np.array([4, 0, 4]), [], np.arange(N) % 2 == 0, (slice(None), slice(1, 3)), ([2, 0], 1),
     np.array(3), np.array(-2), ([0, 2, 3, 5], 1), (np.arange(N)[::-1], slice(2, 4), 0),
     ([5, 0, 3, 3], -1, slice(None, None, 2)), ([1, 4], Ellipsis, 0)],
    ids=str,
)  # fmt: skip
def test_indexing_a_stored_array_reads_what_numpy_would_select(stored, index):
    # h5py refuses negative steps and index lists that are not strictly increasing.
    with load(stored[0]) as data:
        whole = data.states[()]
        np.testing.assert_array_equal(data.states[index], whole[index])


@pytest.mark.parametrize("chunks", [(N, 1, N_STATE), (N, P, 1), (2, 3, N_STATE)], ids=str)
def test_rows_of_a_file_chunked_across_its_rows_are_read_alone_not_with_the_rows_between(
    stored, monkeypatch, chunks
):
    # Rechunked along the times (h5repack -l): a chunk held every trajectory, and states[[0,
    # N - 1]] read all N rows between the two to keep two (all the states of a file of any size).
    path = stored[0]
    with h5py.File(path, "r+") as f:
        values = f["states"][()]
        del f["states"]
        f.create_dataset("states", data=values, chunks=chunks, fletcher32=True)
    asked = []
    read = h5py.Dataset.__getitem__

    def counted(self, key):
        part = read(self, key)
        asked.append(part.size)
        return part

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counted)
    with load(path) as data:
        asked.clear()
        for rows in ([0, N - 1], [N - 1, 0, 3], np.arange(N) % 3 == 0):
            np.testing.assert_array_equal(data.states[rows], values[rows])
            np.testing.assert_array_equal(data.states[rows, 2:5, 1], values[rows, 2:5, 1])
    assert sum(asked) == (2 + 3 + 3) * (P * N_STATE + 3)  # the values of the rows asked for


@pytest.mark.parametrize("index", [True, False, np.True_, (0, True), (slice(None), False)])
def test_a_single_boolean_is_refused_not_read_as_row_one_or_zero(stored, index):
    # states[True] read row 1 and states[False] row 0, where NumPy adds an axis.
    with load(stored[0]) as data, pytest.raises(IndexError, match="single boolean"):
        data.states[index]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int8])
def test_rows_given_in_a_small_integer_type_index_a_dataset_of_more_rows(tmp_path, dtype):
    # uint8 rows of a dataset of 256 rows or more raised "OverflowError: Python integer 300
    # out of bounds for uint8" (the length added to them), where NumPy reads them.
    values = np.arange(300.0 * 2).reshape(300, 2)
    with h5py.File(tmp_path / "rows.h5", "w") as f:
        f["values"] = values
        array = H5Array(f["values"], tmp_path / "rows.h5")
        rows = np.array([5, 3, 3, 120], dtype=dtype)
        np.testing.assert_array_equal(array[rows], values[rows])
        np.testing.assert_array_equal(array[rows[[3, 0]], 1], values[rows[[3, 0]], 1])


@pytest.mark.parametrize("index", [N, -N - 1, [0, N]])
def test_a_row_out_of_range_is_named_with_the_number_of_rows(stored, index):
    # states[-(N + 1)] said "Index (-1) out of range for (0-6)", naming another index.
    with load(stored[0]) as data, pytest.raises(IndexError, match=f"out of range for the {N} rows"):
        data.states[index]


@pytest.mark.parametrize("split", [["train"], "training", None])
def test_a_split_that_is_not_a_stored_name_is_refused_with_the_choices(stored, split):
    # A list raised TypeError: unhashable type.
    with load(stored[0]) as data, pytest.raises(physode.InvalidArgumentError, match="'train'"):
        data.split_indices(split)


def test_a_file_from_before_the_time_reached_and_drift_were_stored_reads_and_checks(stored):
    # Files of format version 1 written before 2026-12 have no /solver/t_final and no /drift.
    path = stored[0]
    with h5py.File(path, "r+") as f:
        del f["solver/t_final"], f["drift"]
        f["flags"][...] = f["flags"][()] & ~np.uint8(1)
        f["flags"][4] |= 1
        f["solver/status"][...] = np.zeros(N, dtype=np.int8)
        f["solver/status"][4] = 2  # STEP_SIZE_UNDERFLOW
    with load(path) as data:
        assert data.t_final is None and data.drift is None
    report = check(path)
    assert report.failures == [physode.data.SolverFailure(4, "step-size underflow", None)]
    table = report.table()
    assert "solver failures by cause:\n  step-size underflow  1: trajectory 4\n" in table
    assert "does not store the time each solve reached" in table


def test_a_file_without_flag_bit_4_reads_and_any_flag_bit_leaves_a_trajectory_out(stored):
    # Bit 4 (values stored as inf or NaN) came on 2026-12-06: files before it list two bits
    # and read as ever. TrajectoryDataset left out bits 1 and 2 alone and kept a trajectory
    # with any other bit set, which the trainer (flags == 0) left out.
    path = stored[0]
    with h5py.File(path, "r+") as f:
        f.attrs.create("flag_bits", np.bytes_('{"solver_failed": 1, "drift": 2}'))
        flags = f["flags"][()] & np.uint8(1)  # the failures 1 and 4 agree with the status
        flags[2], flags[5] = 4, 8  # stored as inf; a bit that a later physode may add
        f["flags"][...] = flags
    with load(path) as data:
        assert data.flags.tolist() == [0, 1, 4, 0, 1, 8, 0]
        assert json.loads(data.attrs["flag_bits"]) == {"solver_failed": 1, "drift": 2}
    assert TrajectoryDataset(path, split="all").trajectories.tolist() == [0, 3, 6]
    assert TrajectoryDataset(path, split="train").trajectories.tolist() == [0, 3]
    assert len(TrajectoryDataset(path, split="all", exclude_flagged=False).trajectories) == N


@pytest.mark.parametrize(
    ("status", "status_codes", "cause"),
    [
        (1, None, "max_steps used up"),
        (3, None, "non-finite state"),
        (9, None, "unknown cause (status code 9)"),
        (5, '{"SUCCESS": 0, "STALLED": 5}', "stalled"),  # a code of a later physode
    ],
)
def test_check_names_each_failures_cause_from_its_stored_status(
    stored, status, status_codes, cause
):
    path = stored[0]
    with h5py.File(path, "r+") as f:
        f["flags"][...] = np.array([0, 0, 1, 0, 0, 0, 0], dtype=np.uint8)
        f["solver/status"][...] = np.array([0, 0, status, 0, 0, 0, 0], dtype=np.int8)
        f["solver/t_final"][2] = 0.75
        if status_codes is not None:
            f.attrs.create("status_codes", np.bytes_(status_codes))
    report = check(path)
    assert report.failures == [physode.data.SolverFailure(2, cause, 0.75)]
    assert f"  {cause}  1: trajectory 2 (t = 0.75)" in report.table()


def _set_failures(flags, status, status_codes=None):
    def damage(f):
        f["flags"][...] = np.array(flags, dtype=np.uint8)
        f["solver/status"][...] = np.array(status, dtype=np.int8)
        if status_codes is not None:
            f.attrs.create("status_codes", np.bytes_(status_codes))

    return damage


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_set_failures([0, 0, 1, 0, 0, 0, 0], [0] * 7),
         r"trajectory 2 is flagged as a solver failure \(flag bit 1\) but /solver/status says "
         r"SUCCESS \(code 0\); the two must agree"),
        (_set_failures([0, 3, 2, 0, 0, 0, 0], [0, 1, 2, 2, 0, 3, 0]),
         r"trajectories 2, 3, 5 have the status of a failed solve in /solver/status \(codes 2, "
         r"3\) but not the solver-failure flag \(bit 1\)"),
        # a later physode's status table, where SUCCESS has another code
        (_set_failures([1, 0, 0, 0, 0, 0, 0], [5, 0, 5, 5, 5, 5, 5], '{"SUCCESS": 5}'),
         r"trajectory 1 has the status of a failed solve in /solver/status \(code 0\)"),
    ],
    ids=["flagged-but-success", "failed-but-unflagged", "the-files-own-status-codes"],
)  # fmt: skip
def test_a_failure_flag_that_disagrees_with_the_status_is_refused_naming_the_trajectory(
    stored, capsys, damage, message
):
    # Such a file was read, and check listed the trajectory as a failure of "unknown cause
    # (status code 0)"; TrajectoryDataset left it out by its flag alone.
    path = stored[0]
    _refused_once_damaged(path, damage, message, prefix=f"{path}: damaged: ")
    with pytest.raises(physode.DataFormatError, match=message):
        TrajectoryDataset(path, split="all")
    assert main(["check", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"physode check: error: {path}: damaged: ")


def test_check_tells_a_failures_own_nan_from_states_that_are_not_finite_before_it(stored):
    # Trajectories 1 and 4 of the synthetic file failed. NaN after the time a failed solve
    # reached is how a failure is stored; NaN or inf before it, or along a solve that
    # succeeded, is not, and check reported it as a drift of inf.
    path = stored[0]
    with h5py.File(path, "r+") as f:
        states, t_final = f["states"][()], f["solver/t_final"][()]
        states[4, 5:] = np.nan  # t[5] = 1.25, after the time reached: the failure's own
        t_final[4] = 1.0
        states[1, 3:] = np.nan  # t[3] = 0.75, before the time reached
        t_final[1] = 1.5
        states[2, 6, 1] = np.nan  # a successful solve
        # Trajectory 6 starts at rest, so its drift's scale is the median of its six finite
        # points (the lower middle one), which the inf at t[6] must not shift.
        states[6, :6] = [[0.0, 0.0], [0.1, 0.0], [0.2, 0.0], [0.3, 0.0], [0.4, 0.0], [0.5, 0.0]]
        states[6, 6:, 0] = -np.inf
        f["states"][...], f["solver/t_final"][...] = states, t_final
    report = check(path, worst=5)
    assert report.failed_trajectories == [1, 4]
    assert report.non_finite == [
        physode.data.NonFiniteStates(1, 3, 0.75, "NaN"),
        physode.data.NonFiniteStates(2, 6, 1.5, "NaN"),
        physode.data.NonFiniteStates(6, 6, 1.5, "inf"),
    ]
    assert report.n_measured == 3 and not report.passed
    (energy,) = report.invariants
    assert sorted(i for i, _ in energy.worst_trajectories) == [0, 3, 5]
    (partial,) = report.partial_drift  # up to each one's first state that is not finite
    assert sorted(i for i, _ in partial.worst_trajectories) == [1, 2, 4, 6]
    expected = {}
    with load(path) as data:  # each measured as if its states ended before the first bad one
        for i, points in {1: 3, 2: 6, 4: 5, 6: 6}.items():
            drift = physode.data.drift_per_trajectory(
                data.system,
                torch.from_numpy(data.states[i : i + 1, :points]),
                torch.from_numpy(data.params[i : i + 1]),
                torch.from_numpy(data.t[:points]),
            )["energy"]
            expected[i] = drift.max()
    assert dict(partial.worst_trajectories) == pytest.approx(expected, rel=1e-12)
    lines = report.table().splitlines()
    assert lines[0] == (
        f"{path}: 7 trajectories, 2 solver failures (trajectories 1, 4), 3 with non-finite "
        "states (trajectories 1, 2, 6)"
    )
    assert "  trajectories 1 (NaN from t[3] = 0.75), 2 (NaN from t[6] = 1.5), 6 (inf from " in (
        "\n".join(lines)
    )
    assert lines[-1] == (
        "check failed: the file has 2 solver failures (trajectories that stopped before the "
        "final time, flag bit 1) and 3 trajectories with stored states that are not finite "
        "(inf or NaN where the solve did not stop)"
    )


def test_the_layouts_attribute_list_is_what_simulate_writes(oscillator_h5):
    # The list decides which attributes must be UTF-8 text and which are a user's own: an
    # attribute simulate writes but the list lacks would be read as a user's, unchecked.
    from physode.data._store import LAYOUT_ATTRIBUTES

    with h5py.File(oscillator_h5, "r") as f:
        assert set(f.attrs) == LAYOUT_ATTRIBUTES
