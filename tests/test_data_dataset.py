"""Tests of physode.data.TrajectoryDataset: windows, splits, noise, flags, DataLoader workers."""

from __future__ import annotations

import gc
import pickle
import shutil

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import physode
from physode.data import TrajectoryDataset, load, simulate

FAST = {"t_end": 3.0, "points": 9, "rtol": 1e-8, "atol": 1e-8, "quiet": True}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset") / "data.h5"
    simulate(
        "harmonic_oscillator",
        trajectories=10,
        out=out,
        seed=2,
        params="sample",
        noise=0.1,
        split=(0.6, 0.2, 0.2),
        dtype="float32",
        **FAST,
    )
    return out


def test_windows_cover_every_start_of_every_trajectory_in_the_split(stored):
    dataset = TrajectoryDataset(stored, split="train", window=4, stride=2)
    with load(stored) as data:
        train = data.split_indices("train")
        assert len(dataset) == len(train) * 4  # starts 0, 2, 4, 5 of 9 points
        seen = set()
        for k in range(len(dataset)):
            item = dataset[k]
            i, s = item["trajectory"], item["start"]
            seen.add((i, s))
            np.testing.assert_array_equal(item["ys"].numpy(), data.states[i, s : s + 4])
            np.testing.assert_array_equal(item["t"].numpy(), data.t[s : s + 4].astype(np.float32))
            np.testing.assert_array_equal(item["params"].numpy(), data.params[i].astype(np.float32))
            assert item["ys"].dtype == item["t"].dtype == torch.float32
    assert seen == {(int(i), s) for i in train for s in (0, 2, 4, 5)}


def test_numpy_integers_are_accepted_as_window_and_stride(stored):
    dataset = TrajectoryDataset(stored, split="train", window=np.int64(4), stride=np.int32(2))
    assert isinstance(dataset.window, int) and isinstance(dataset.stride, int)
    assert dataset.starts.tolist() == [0, 2, 4, 5]  # of 9 points, the last ending on the last
    assert dataset[len(dataset) - 1]["ys"].shape == (4, 2)


def test_negative_indices_count_from_the_end_and_out_of_range_raises(stored):
    dataset = TrajectoryDataset(stored, split="val", window=9)
    assert dataset[-1]["trajectory"] == dataset[len(dataset) - 1]["trajectory"]
    with pytest.raises(IndexError):
        dataset[len(dataset)]


@pytest.mark.parametrize(
    "item",
    # A bool and a one-element tensor of shape (1,) read as an integer through operator.index.
    [slice(0, 2), 1.0, "0", [0, 1], True, np.True_, torch.tensor(True), torch.tensor([1])],
)
def test_an_index_that_is_not_an_integer_is_refused_by_name(stored, item):
    dataset = TrajectoryDataset(stored, split="val", window=9)
    accepted = r"must be an integer \(Python's, NumPy's or a 0-d torch integer, not a bool\)"
    with pytest.raises(TypeError, match=r"index .* " + accepted):
        dataset[item]


def test_numpy_and_torch_integers_index_like_python_integers(stored):
    dataset = TrajectoryDataset(stored, split="all", window=9)
    for item in (np.int64(-1), torch.tensor(3)):
        assert dataset[item]["trajectory"] == dataset[int(item)]["trajectory"]


def test_whole_trajectories_by_default_and_every_split_available(stored):
    sizes = {
        split: len(TrajectoryDataset(stored, split=split)) for split in ("train", "val", "test")
    }
    assert sizes == {"train": 6, "val": 2, "test": 2}
    assert TrajectoryDataset(stored, split="all")[3]["ys"].shape == (9, 2)


def test_noisy_windows_come_with_their_clean_states(stored):
    item = TrajectoryDataset(stored, split="test", window=3, noisy=True)[0]
    with load(stored) as data:
        i, s = item["trajectory"], item["start"]
        np.testing.assert_array_equal(item["ys"].numpy(), data.noisy_states[i, s : s + 3])
        np.testing.assert_array_equal(item["ys_clean"].numpy(), data.states[i, s : s + 3])


def test_a_dataloader_with_two_workers_yields_every_window_once(stored):
    dataset = TrajectoryDataset(stored, split="all", window=5, stride=2)
    pickle.loads(pickle.dumps(dataset))[0]  # pickles without an open file
    dataset[0]  # the parent's open handle must not be used by the forked workers
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2)
    pairs, total = [], 0
    with load(stored) as data:
        for batch in loader:
            assert batch["ys"].shape[1:] == (5, 2)
            for k in range(len(batch["trajectory"])):
                i, s = int(batch["trajectory"][k]), int(batch["start"][k])
                np.testing.assert_array_equal(batch["ys"][k].numpy(), data.states[i, s : s + 5])
                pairs.append((i, s))
            total += len(batch["trajectory"])
    assert total == len(dataset) == 10 * 3
    assert len(set(pairs)) == len(pairs)


@pytest.mark.parametrize("noisy", [False, True])
def test_windows_are_read_through_one_open_handle_that_keeps_its_chunk_cache(
    stored, monkeypatch, noisy
):
    """HDF5 frees a dataset's chunk cache when its last handle closes: a handle opened per
    window decompressed a whole chunk of trajectories for every window read (7 ms instead of
    13 us a window on 4096 trajectories of 1000 points)."""
    opened = []
    get = h5py.Group.__getitem__

    def counting(group, name):
        opened.append(name)
        return get(group, name)

    monkeypatch.setattr(h5py.Group, "__getitem__", counting)
    dataset = TrajectoryDataset(stored, split="all", window=3, noisy=noisy)
    items = [dataset[0]]  # opens the file in this process
    opened.clear()
    items += [dataset[k] for k in range(1, len(dataset))]
    assert opened == []
    with load(stored) as data:
        values = data.noisy_states if noisy else data.states
        for item in items:
            i, s = item["trajectory"], item["start"]
            np.testing.assert_array_equal(item["ys"].numpy(), values[i, s : s + 3])
    pickle.loads(pickle.dumps(dataset))[0]  # the open handles stay in this process


def _cache_bytes(array) -> int:
    """The size of the chunk cache HDF5 holds for the lazy array ``array``."""
    return array._dataset.id.get_access_plist().get_chunk_cache()[1]


def test_the_chunk_caches_of_many_datasets_share_one_budget_per_process(stored, tmp_path):
    """Each dataset kept a chunk cache of 32 MiB per array once read, however many a process
    held: a ConcatDataset of one dataset per file grew by 32 MiB a file as an epoch reached it
    (3.2 GB for 100 files, in each DataLoader worker). Up to 4 arrays keep 32 MiB each (the
    splits of one file share theirs); more share 128 MiB, and those opened before still read
    the right windows."""
    gc.collect()  # the datasets of earlier tests, which would share the budget
    paths = [stored] + [shutil.copy(stored, tmp_path / f"copy{k}.h5") for k in range(5)]
    few = [TrajectoryDataset(stored, split=split, window=3) for split in ("train", "val", "test")]
    few += [TrajectoryDataset(path, split="all", window=3) for path in paths[1:3]]
    for dataset in few:
        dataset[0]
    assert [_cache_bytes(dataset._states) for dataset in few] == [32 << 20] * 5
    many = few + [TrajectoryDataset(path, split="all", window=3, noisy=True) for path in paths[3:]]
    for dataset in many:
        dataset[0]
    arrays = {(dataset.path, "states"): dataset._states for dataset in many}
    arrays |= {(dataset.path, "noisy"): dataset._noisy_states for dataset in many[5:]}
    caches = [_cache_bytes(array) for array in arrays.values()]
    assert len(caches) == 3 + 2 * 3
    assert sum(caches) <= 128 << 20
    assert min(caches) >= 2 << 20
    with load(stored) as data:
        for dataset in many:
            item = dataset[len(dataset) - 1]
            i, s = item["trajectory"], item["start"]
            np.testing.assert_array_equal(
                item["ys"].numpy(),
                (data.noisy_states if dataset.noisy else data.states)[i, s : s + 3],
            )


def test_flagged_trajectories_are_left_out_unless_asked_for(tmp_path):
    out = tmp_path / "failed.h5"
    # A step lands on each of the 8 later output times; the solve needs 9.
    simulate("harmonic_oscillator", trajectories=3, out=out, max_steps=8, **FAST)
    with pytest.raises(physode.InvalidArgumentError, match="no trajectories left after excluding"):
        TrajectoryDataset(out, split="all")
    assert len(TrajectoryDataset(out, split="all", exclude_flagged=False)) == 3


def test_trajectories_stored_as_inf_in_float32_are_left_out_as_flagged(tmp_path, growth_spec):
    # x = x0 e^t passes float32's range (3.4e38) by t = 89 for x0 > 0.76 and is stored as inf;
    # simulate warned, but the flags stayed 0 and the dataset handed out windows of inf.
    spec = growth_spec
    out = tmp_path / "growth.h5"
    with pytest.warns(physode.PhysodeWarning, match="beyond the range of float32"):
        simulate(spec, trajectories=6, out=out, seed=3, dtype="float32",
                 **{**FAST, "t_end": 89.0})  # fmt: skip
    with load(out) as data:
        overflowed = np.isinf(data.states[()]).any(axis=(1, 2))
    assert 0 < overflowed.sum() < 6
    dataset = TrajectoryDataset(out, split="all", window=3)
    assert dataset.trajectories.tolist() == np.flatnonzero(~overflowed).tolist()
    assert all(torch.isfinite(dataset[i]["ys"]).all() for i in range(len(dataset)))
    kept = TrajectoryDataset(out, split="all", exclude_flagged=False).trajectories
    assert kept.tolist() == list(range(6))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"split": "training"},
            r"split='training'; choose one of \['train', 'val', 'test', 'all'\]",
        ),
        ({"window": 10}, "window=10 must be an integer from 2 to 9"),
        ({"window": 1}, "window=1 must be an integer from 2 to 9"),
        ({"stride": 0}, "stride=0 must be an integer >= 1"),
    ],
)
def test_bad_arguments_name_the_value_and_the_valid_range(stored, kwargs, message):
    with pytest.raises(physode.InvalidArgumentError, match=message):
        TrajectoryDataset(stored, **kwargs)


def test_noisy_on_a_file_without_noise_says_how_to_get_it(tmp_path):
    out = tmp_path / "clean.h5"
    simulate("harmonic_oscillator", trajectories=2, out=out, **FAST)
    with pytest.raises(physode.InvalidArgumentError, match="--noise STD"):
        TrajectoryDataset(out, split="all", noisy=True)


def test_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "foreign.h5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(physode.DataFormatError, match="not an HDF5 file"):
        TrajectoryDataset(path)


def test_a_file_simulated_again_at_its_path_is_refused_not_read_with_the_old_split(tmp_path):
    """Each DataLoader worker opens the path anew: a data set simulated again there (another
    seed) was read with the first one's split, flags and parameters."""
    out = tmp_path / "data.h5"
    simulate("harmonic_oscillator", trajectories=6, out=out, seed=1, params="sample", **FAST)
    dataset = TrajectoryDataset(out, split="all")
    simulate(
        "harmonic_oscillator", trajectories=6, out=out, seed=2, params="sample", force=True, **FAST
    )
    with pytest.raises(physode.DataFormatError, match="was replaced by another data set"):
        dataset[0]
    with pytest.raises(physode.DataFormatError, match="make a new TrajectoryDataset"):
        next(iter(DataLoader(dataset, batch_size=6, num_workers=1)))


def test_the_same_run_simulated_again_at_its_path_is_read_by_a_new_process(tmp_path):
    out = tmp_path / "data.h5"
    settings = {"trajectories": 6, "out": out, "seed": 1, "params": "sample", **FAST}
    simulate("harmonic_oscillator", **settings)
    dataset = TrajectoryDataset(out, split="all")
    simulate("harmonic_oscillator", force=True, **settings)  # the same data, another file
    batch = next(iter(DataLoader(dataset, batch_size=6, num_workers=1)))
    with load(out) as data:
        np.testing.assert_array_equal(batch["ys"].numpy(), data.states[:])
        np.testing.assert_array_equal(batch["params"].numpy(), data.params)


def test_a_closed_file_and_partly_built_data_objects_print_without_raising(stored):
    data = physode.data.load(stored)
    data.close()
    assert repr(data).startswith(f"TrajectoryFile({str(stored)!r}, system='harmonic_oscillator'")
    for cls in (physode.data.TrajectoryFile, physode.data.TrajectoryDataset, physode.data.H5Array):
        assert repr(cls.__new__(cls)).startswith(f"<{cls.__name__}, not readable: AttributeError")


def test_a_dataset_made_by_a_relative_path_reads_its_file_after_the_folder_changes(
    stored, tmp_path, monkeypatch
):
    # Made as TrajectoryDataset("data.h5"), read after a notebook's %cd (or in a worker started
    # elsewhere): it opened "data.h5" in the new folder, "no such file" or another data set.
    monkeypatch.chdir(stored.parent)
    dataset = TrajectoryDataset(stored.name, split="train", window=3)
    monkeypatch.chdir(tmp_path)
    first = dataset[0]
    with load(stored) as data:
        expected = data.states[int(first["trajectory"]), :3]
    np.testing.assert_array_equal(first["ys"].numpy(), expected)
    assert pickle.loads(pickle.dumps(dataset))[0]["ys"].equal(first["ys"])
    with dataset._load() as data:  # what the trainer reads
        assert data.states.shape[0] == 10
