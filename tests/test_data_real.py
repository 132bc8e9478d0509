"""Tests of the shipped real data: the Hudson's Bay Company lynx and hare pelts."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from physode.data import load_lynx_hare

REPO = Path(__file__).resolve().parents[1]
LYNX = [4.0, 6.1, 9.8, 35.2, 59.4, 41.7, 19.0, 13.0, 8.3, 9.1, 7.4, 8.0, 12.3, 19.5, 45.7, 51.1,
        29.7, 15.8, 9.7, 10.1, 8.6]  # fmt: skip
HARE = [30.0, 47.2, 70.2, 77.4, 36.3, 20.6, 18.1, 21.4, 22.0, 25.4, 27.1, 40.3, 57.0, 76.6, 52.3,
        19.5, 11.2, 7.6, 14.6, 16.2, 24.7]  # fmt: skip


def test_lynx_hare_holds_the_1900_to_1920_pelts_hare_first():
    data = load_lynx_hare()
    assert data.state_names == ("hare", "lynx")
    np.testing.assert_array_equal(data.years, np.arange(1900, 1921))
    torch.testing.assert_close(data.t, torch.arange(21, dtype=torch.float64))
    torch.testing.assert_close(data.ys, torch.tensor([HARE, LYNX], dtype=torch.float64).T)
    assert data.time_unit == "years"


def test_lynx_hare_states_its_provenance():
    provenance = load_lynx_hare().provenance
    assert "Hudson's Bay Company" in provenance and "thousands of pelts" in provenance


def test_the_repository_copy_and_the_packaged_copy_are_one_file():
    packaged = resources.files("physode.data").joinpath("lynx_hare.csv")
    top_level = REPO / "data" / "lynx_hare.csv"
    assert top_level.resolve() == (REPO / "physode" / "data" / "lynx_hare.csv").resolve()
    assert top_level.read_text() == packaged.read_text()


def test_load_csv_reads_empty_cells_as_missing_and_the_series_trains(tmp_path):
    import physode
    from physode.data import load_csv
    from physode.train import Trajectories

    path = tmp_path / "counts.csv"
    path.write_text("# counted by hand\nyear,hare,lynx\n1900,30,4\n1901,,6.1\n1903,70.2,\n"
                    "1904,77.4,35.2\n\n")  # fmt: skip
    series = load_csv(path)
    assert series.state_names == ("hare", "lynx") and series.time_unit == "year"
    assert series.provenance == "counted by hand"
    np.testing.assert_array_equal(series.years, [1900, 1901, 1903, 1904])
    assert series.t.tolist() == [0.0, 1.0, 3.0, 4.0]
    assert series.ys.isnan().nonzero().tolist() == [[1, 0], [2, 1]]
    data = Trajectories(series.t, series.ys)
    model = physode.models.NeuralODE(2, width=4, depth=1)
    result = physode.train.Trainer(model, data, epochs=2, window=3).fit()
    assert all(np.isfinite(row["loss"]) for row in result.history)


def test_load_csv_reads_a_file_saved_with_a_byte_order_mark_as_without(tmp_path):
    # A spreadsheet's "CSV UTF-8" starts with U+FEFF; it was read into the time column's name.
    from physode.data import load_csv

    path = tmp_path / "counts.csv"
    path.write_bytes(b"\xef\xbb\xbfday,prey,predator\r\n0,10,2\r\n1,,2.5\r\n")
    series = load_csv(path)
    assert series.time_unit == "day" and series.state_names == ("prey", "predator")
    assert series.t.tolist() == [0.0, 1.0] and series.ys[1, 1].item() == 2.5


@pytest.mark.parametrize(
    "text, message",
    [
        ("t,x\n0,1\n1,2,3\n", r"line 3 has 3 cells, the header 2 \(t,x\); leave a cell empty"),
        ("t,x\n0,1\n1,abc\n", r"line 3: unreadable value 'abc' in column 'x'"),
        ("t,x\n0,1\n1,inf\n", r"line 3: unreadable value 'inf' in column 'x'"),
        ("t,x\n0,1\n,2\n", r"line 3: unreadable value '' in column 't' \(need a finite time\)"),
        ("t,x\n0,1\n0,2\n", "the times in column 't' must increase: line 3 repeats the time 0"),
        ("t\n0\n1\n", "expected a time column and at least one value column"),
        ("t,x\n", "expected a header row and at least two rows of values"),
        # One row was read, then refused by Trajectories as "need at least 2 time points".
        ("# a\nt,x\n0,1\n", r"bad.csv: expected .* at least two rows .*found 1 \(line 3\)"),
        # A row of units was refused as its first cell, an "unreadable value 's'".
        ("t,x,y\ns,m,m\n0,1,2\n", r"line 2 \(s,m,m\) holds text .* a row of units .*'#'"),
        ("t,x\n0,1\nt,x\n1,2\n", r"line 3 \(t,x\) holds text .*second header row"),
        # What Python's float reads beyond a number as a file writes it: 1_000 was 1000, NAN
        # missing, infinity refused only as an unreadable value.
        ("t,x\n0,1_000\n1,2\n", r"line 2: unreadable value '1_000' in column 'x' .*digits"),
        ("t,x\n0,1\n1,NAN\n", r"line 3: unreadable value 'NAN' .*NA where it is missing"),
        ("t,x\n0,1\ninfinity,2\n", "line 3: unreadable value 'infinity' in column 't' .*infinite"),
        ("t,x\n0,1\n1,1e999\n", "line 3: unreadable value '1e999' .*infinite values"),
        # A line break in a quoted cell was dropped: a header cell "x<break>y" gave a state xy.
        ('t,"x\ny"\n0,1\n1,2\n', "line 1: a quoted cell runs on to line 2 .*line break"),
        # An empty or repeated name became a state named '' or two states named 'x'.
        ("day,x,\n0,1,2\n", "bad.csv: line 1: column 3 of the header has no name"),
        (",x\n0,1\n", "bad.csv: line 1: column 1 of the header has no name"),
        ("day,x,x\n0,1,2\n", "bad.csv: line 1: columns 2 and 3 of the header are both named 'x'"),
        ("x,y,x,x\n0,1,2,3\n", "bad.csv: line 1: columns 1, 3 and 4 of the header are all named"),
        # Each refusal names the line an editor shows and what to do (until 2026-12-07 none named
        # a line, or counted data rows only, said only that the times must increase, and took a
        # ';' file for one column).
        # Comment and blank lines count: the line is the one an editor shows.
        ("# by hand\n\nt,x\n0,1\n# a note\n1,abc\n", "bad.csv: line 6: unreadable value 'abc'"),
        ("# source\nt,x\n0,1\n\n1,2,3\n", r"bad.csv: line 5 has 3 cells, the header 2"),
        # Times given out of order, or twice (several series stacked in one file).
        ("t,x\n0,1\n2,2\n1,3\n", "must increase: line 4 has the time 1, before 2 on line 3; sort"),
        ("t,x\n0,1\n1,2\n1,3\n", "must increase: line 4 repeats the time 1 of line 3; give each"),
        # A European spreadsheet's CSV: ';' between values, decimal commas.
        ("t;x;y\n0;1,5;2\n", "line 1: the header 't;x;y' is one column, its names separated by"),
        ("t\tx\n0\t1.5\n", r"line 1: the header 't\\tx' is one column, its names separated by"),
        ("t,x\n0,1,5\n", r"line 2 has 3 cells, .*a decimal comma splits a number in two"),
        # A time column of dates.
        ("date,x\n2021-03-04,1\n", "line 2: unreadable value '2021-03-04' .*dates are not read"),
    ],
)
def test_load_csv_refuses_malformed_files(tmp_path, text, message):
    import physode
    from physode.data import load_csv

    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(physode.DataFormatError, match=message):
        load_csv(path)
    with pytest.raises(physode.DataFormatError, match="cannot read it"):
        load_csv(tmp_path / "missing.csv")


def test_load_csv_reads_indented_comments_as_comments_and_signed_and_exponent_numbers(tmp_path):
    # An indented '#' line was refused as a row of one cell, as if it were data.
    from physode.data import load_csv

    path = tmp_path / "counts.csv"
    path.write_text("  # by hand\nt,x\n0,+1.\n\t# a note\n1,-.5E-1\n")
    series = load_csv(path)
    assert series.provenance == "by hand\na note"
    assert series.ys[:, 0].tolist() == [1.0, -0.05]


def test_load_csv_refuses_a_file_without_a_header_instead_of_taking_its_first_row_as_names(
    tmp_path,
):
    # Until 2026-12-07 the first observation became the header: a state named '1', time_unit
    # '0', and one observation fewer, without a word.
    import physode
    from physode.data import load_csv

    path = tmp_path / "counts.csv"
    for text in ("0,1,2\n1,2,3\n2,3,4\n", "0,,2\n1,2,3\n"):
        path.write_text(text)
        with pytest.raises(physode.DataFormatError, match="line 1: the first row .* holds numbers"):
            load_csv(path)
    path.write_text("t,1,2\n0,1,2\n1,2,3\n")  # numbers as the names of quantities are names
    assert load_csv(path).state_names == ("1", "2")


def test_load_csv_says_to_save_a_file_in_another_encoding_as_utf8(tmp_path):
    import physode
    from physode.data import load_csv

    path = tmp_path / "counts.csv"
    path.write_bytes("t,x [\u00b5m]\n0,1\n".encode("cp1252"))  # a Western spreadsheet's "CSV"
    with pytest.raises(physode.DataFormatError, match="cannot read it .* save it as UTF-8 text"):
        load_csv(path)


def test_the_series_prints_its_names_shapes_and_years_not_its_values():
    assert repr(load_lynx_hare()) == (
        "TimeSeries(state_names=('hare', 'lynx'), t=Tensor(shape=(21,), dtype=float64), "
        "ys=Tensor(shape=(21, 2), dtype=float64), years=1900..1920, time_unit='years')"
    )


@pytest.mark.parametrize("cell", ["NA", "N/A", "n/a", "NULL", "null", "None", "#N/A", "<NA>",
                                  "NaN", "nan", "-nan", ""])  # fmt: skip
def test_load_csv_reads_the_cells_pandas_reads_as_missing_as_missing(tmp_path, cell):
    # R writes NA, spreadsheets #N/A, databases NULL: each was refused as an unreadable value.
    from physode.data import load_csv

    path = tmp_path / "counts.csv"
    path.write_text(f"t,x,y\n0,1,2\n1,{cell},2.5\n2, {cell} ,3\n")
    series = load_csv(path)
    assert series.ys.isnan().nonzero().tolist() == [[1, 0], [2, 0]]  # spaces around one too
    assert series.ys[1, 1].item() == 2.5 and series.ys[2, 1].item() == 3.0


@pytest.mark.parametrize(
    "text, message",
    [
        # pandas reads these in the case written only: other text stays refused.
        ("t,x\n0,1\n1,na\n", r"line 3: unreadable value 'na' in column 'x' \(need a number, or "
                             "empty or NA where it is missing"),
        ("t,x\n0,1\n1,Null\n", "line 3: unreadable value 'Null' in column 'x'"),
        ("t,x\n0,1\n1,missing\n", "line 3: unreadable value 'missing' in column 'x'"),
        # A time is never missing.
        ("t,x\n0,1\nNA,2\n", r"line 3: unreadable value 'NA' in column 't' \(need a finite time"),
    ],
)  # fmt: skip
def test_load_csv_still_refuses_other_text_and_a_missing_time(tmp_path, text, message):
    import physode
    from physode.data import load_csv

    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(physode.DataFormatError, match=message):
        load_csv(path)


def _lotka_volterra_csv(tmp_path, header: str) -> tuple[Path, torch.Tensor]:
    """Lotka-Volterra states (x, y) at t = 0, 0.25, ..., 3, written with the columns in the
    order ``header`` names them (``t,y,x``: y first); returns the file and the states (P, 2)."""
    import physode

    system = physode.systems.load("lotka_volterra")
    t = torch.linspace(0, 3, 13, dtype=torch.float64)
    y0 = torch.tensor([0.4425, 4.628], dtype=torch.float64)
    ys = physode.odeint(system.vector_field(), y0, t, rtol=1e-10, atol=1e-12)
    columns = {"x": ys[:, 0], "y": ys[:, 1]}
    names = header.split(",")[1:]
    lines = [header] + [
        ",".join([f"{float(t[j])!r}"] + [f"{float(columns[n][j])!r}" for n in names])
        for j in range(len(t))
    ]
    path = tmp_path / "counts.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, ys


def test_a_series_trains_with_its_columns_matched_to_the_models_states_by_name(tmp_path):
    # A file t,y,x met a model of states (x, y): wrapped as Trajectories(series.t, series.ys),
    # the states trained swapped without a word, and a TimeSeries itself was refused.
    import physode
    from physode.data import load_csv
    from physode.models import PhysicsModel
    from physode.train import Trainer, rollout_report

    path, ys = _lotka_volterra_csv(tmp_path, "t,y,x")
    series = load_csv(path)
    assert series.state_names == ("y", "x")
    model = PhysicsModel(physode.systems.load("lotka_volterra"), ["alpha"])
    trainer = Trainer(model, series, epochs=1, window=4)
    assert trainer.train_data.state_names == ("x", "y")
    torch.testing.assert_close(trainer.train_data.states[0], ys)
    # At the true parameters the model follows the data, as it would not with y taken for x.
    assert rollout_report(model, series, conservation=False).mse < 1e-10
    assert trainer.fit().history[-1]["loss"] < 1e-10
    # The columns in the system's order, and wrapped without names (by position), alike.
    path, _ = _lotka_volterra_csv(tmp_path, "t,x,y")
    for data in (load_csv(path), physode.train.Trajectories(series.t, load_csv(path).ys)):
        torch.testing.assert_close(Trainer(model, data, epochs=1).train_data.states[0], ys)


def test_a_series_whose_names_are_not_the_models_states_is_refused_naming_both():
    import physode
    from physode.models import PhysicsModel
    from physode.train import Trainer, Trajectories, rollout_report

    pelts = load_lynx_hare()
    model = PhysicsModel(physode.systems.load("lotka_volterra"), ["alpha"])
    message = (r"the training data name their states \['hare', 'lynx'\], the model's system "
               r"'lotka_volterra' has the states \['x', 'y'\] \('hare', 'lynx' not among them, "
               r"'x', 'y' not in the data\).*Trajectories\(series.t, series.ys\)")  # fmt: skip
    with pytest.raises(physode.InvalidArgumentError, match=message):
        Trainer(model, pelts, epochs=1)
    with pytest.raises(physode.InvalidArgumentError, match="the held-out data name their"):
        rollout_report(model, pelts)
    # Without names the columns are taken in their order (hare the prey x), as documented.
    trainer = Trainer(model, Trajectories(pelts.t, pelts.ys), epochs=1)
    torch.testing.assert_close(trainer.train_data.states[0], pelts.ys)
    # A neural ODE has no system to match: the series trains in its columns' order.
    neural = physode.models.NeuralODE(2, width=4, depth=1)
    torch.testing.assert_close(Trainer(neural, pelts, epochs=1).train_data.states[0], pelts.ys)
