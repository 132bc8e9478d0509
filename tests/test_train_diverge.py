"""Training that meets a batch it cannot use: a failed solve, a non-finite loss or gradient
(``on_failed_batch``), and validation that cannot be solved. Each failure is provoked on a chosen
batch, never by hoping that a learning rate diverges."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch import nn

import physode
import physode.train.trainer as trainer_module
from physode.solvers.loop import _failure_message
from physode.train import TrainConfig, Trainer

DTYPE = torch.float64


class Decay(nn.Module):
    """``dy/dt = -k y``; returns NaN while ``poisoned`` (all rows, or rows whose ``y > 2``)."""

    autonomous = True

    def __init__(self, threshold: float | None = None) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(0.5, dtype=DTYPE))
        self.threshold = threshold  # NaN where k exceeds it, as a diverging weight would
        self.poisoned = False
        self.rows = False

    def forward(self, t, y):
        if self.poisoned and self.rows:
            return torch.where(y > 2.0, math.nan, -self.k * y)
        bad = self.poisoned or (self.threshold is not None and self.k.detach() > self.threshold)
        return y * math.nan if bad else -self.k * y


def _data():
    """Four decays of rate 1.5, from 1, 2, 3 and 4."""
    t = torch.linspace(0, 2, 21, dtype=DTYPE)
    ys = torch.exp(-1.5 * t)[None, :, None] * torch.arange(1, 5, dtype=DTYPE)[:, None, None]
    return t, ys


def _trainer(**settings):
    settings = {"epochs": 4, "window": 5, "window_stride": 5, "batch_size": 4, "lr": 0.05,
                "batches_per_epoch": 4, **settings}  # fmt: skip
    model = settings.pop("model", None) or Decay()
    return Trainer(model, _data(), **settings)


def _solver_error(*args, status=physode.Status.STEP_SIZE_UNDERFLOW, h=1e-14, adaptive=True,
                  backward=False, **kwargs):  # fmt: skip
    """Raise the SolverError a solve that stopped at t=0.3 raises, with the solver's message."""
    message = _failure_message(status, 0.3, h, 100, adaptive, DTYPE)
    if backward:
        message = f"Opt-Disc backward solve failed: {message} The backward solve uses ..."
    raise physode.SolverError(message, status=status, t=0.3, step_size=h)


class _NanGradient(torch.autograd.Function):
    """The identity, whose gradient is NaN."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.nan


def _failing(monkeypatch, fail, how="solve"):
    """Make the training solves of the (epoch, batch) pairs for which ``fail(epoch, batch,
    evaluation)`` is true fail: a SolverError, a NaN gradient or a NaN loss, or (``"poison"``)
    a real solve of a model that returns NaN, which the solver stops with a partial solution.
    Returns the list of (epoch, batch, k) each training evaluation started from."""
    solve_batch, calls = Trainer._solve_batch, []

    def wrapped(self, data, batch):
        if data is not self.train_data:
            return solve_batch(self, data, batch)
        key = (self.epoch + 1, self._batch_number)
        calls.append((*key, self.model.k.item()))
        if fail(*key, sum(1 for c in calls if c[:2] == key)):
            if how == "solve":
                _solver_error()
            if how == "poison":
                self.model.poisoned = True
                try:
                    return solve_batch(self, data, batch)
                finally:
                    self.model.poisoned = False
            sol, t, loss, n = solve_batch(self, data, batch)
            if how == "gradient":
                return sol, t, _NanGradient.apply(loss), n
            return sol, t, loss * math.nan, n
        return solve_batch(self, data, batch)

    train_epoch = Trainer.train_epoch

    def counted(self):
        # The batch number within the epoch, counted by the optimiser's closure.
        self._batch_number = 0
        return train_epoch(self)

    evaluate = Trainer._evaluate

    def numbered(self, batch, evaluations):
        if not evaluations:
            self._batch_number += 1
        return evaluate(self, batch, evaluations)

    monkeypatch.setattr(Trainer, "_solve_batch", wrapped)
    monkeypatch.setattr(Trainer, "train_epoch", counted)
    monkeypatch.setattr(Trainer, "_evaluate", numbered)
    return calls


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ------------------------------------------------------------------ stop (the default)


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
@pytest.mark.parametrize("how", ["solve", "gradient", "loss"])
def test_a_failed_batch_stops_with_the_run_back_at_its_last_completed_epoch(
    optimizer, how, tmp_path, monkeypatch
):
    # Four batches an epoch; batch 2 of epoch 3 fails: at its first evaluation, or for L-BFGS
    # in its line search (after the step moved the weights).
    lbfgs = optimizer == "lbfgs"
    settings = {"optimizer": optimizer, "lr": 1.0 if lbfgs else 0.05, "batch_size": 2}
    when = 2 if lbfgs and how != "loss" else 1  # L-BFGS's first loss must be finite
    _failing(monkeypatch, lambda e, b, n: (e, b, n) == (3, 2, when), how)
    trainer = _trainer(**settings, checkpoint_dir=tmp_path / "ck", log=tmp_path / "log.csv")
    with pytest.raises(physode.TrainingError) as caught:
        trainer.fit()
    error = caught.value
    assert (error.epoch, error.batch) == (3, 2)
    message = str(error)
    assert message.startswith("training stopped in epoch 3, batch 2 of 4: ")
    assert "back at the end of epoch 2" in message and "smaller lr" in message
    assert f"{tmp_path / 'ck' / 'last.pt'} holds" in message
    assert "on_failed_batch='skip'" in message
    assert f"build a new trainer with init_from={str(tmp_path / 'ck' / 'last.pt')!r}" in message
    expected = {
        "solve": "the solve of its 2 windows (training trajector",
        "gradient": "is not finite in k",
        "loss": "its loss over 2 windows (training trajector",
    }[how]
    assert expected in message
    if how == "solve":
        assert " with step size 1e-14: step size underflow; the error control " in message
        assert isinstance(error.__cause__, physode.SolverError)
        # The solver's advice names solve()'s settings; max_steps is advised where it ran out.
        assert "raise max_steps" not in message and "a larger max_steps" not in message
    # The trainer, its last.pt and its log hold epoch 2, with the weights a 2-epoch run ends at.
    monkeypatch.undo()
    twin = _trainer(**settings, epochs=2)
    twin.fit()
    assert trainer.epoch == 2 and len(trainer.history) == 2
    assert _same_weights(trainer.model, twin.model)
    assert error.checkpoint == tmp_path / "ck" / "last.pt"
    saved = torch.load(error.checkpoint, weights_only=True)
    assert saved["epoch"] == 2 and torch.equal(saved["model"]["k"], twin.model.k.detach())
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3
    # fit() continues the run exactly, as after Ctrl-C.
    trainer.fit()
    whole = _trainer(**settings)
    whole.fit()
    assert _same_weights(trainer.model, whole.model)
    assert [r["loss"] for r in trainer.history] == [r["loss"] for r in whole.history]


def test_a_weight_that_diverges_stops_training_with_finite_weights_and_no_bad_checkpoint(
    tmp_path,
):
    # No patching: the model turns NaN once k passes 0.9, as a diverging network would.
    trainer = _trainer(model=Decay(threshold=0.9), epochs=50, lr=0.1, checkpoint_dir=tmp_path)
    with pytest.raises(physode.TrainingError, match="non-finite") as caught:
        trainer.fit()
    epoch = caught.value.epoch
    assert epoch > 1 and trainer.epoch == epoch - 1
    twin = _trainer(model=Decay(threshold=0.9), epochs=epoch - 1, lr=0.1)
    twin.fit()
    assert _same_weights(trainer.model, twin.model)
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert torch.equal(saved["model"]["k"], twin.model.k.detach())


def test_a_failure_in_the_first_epoch_goes_back_to_the_initial_weights_and_saves_nothing(
    tmp_path, monkeypatch
):
    _failing(monkeypatch, lambda e, b, n: (e, b) == (1, 3))
    trainer = _trainer(checkpoint_dir=tmp_path)
    with pytest.raises(physode.TrainingError, match="back at the weights it started from"):
        trainer.fit()
    assert trainer.model.k.item() == 0.5 and trainer.epoch == 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"status": physode.Status.MAX_STEPS, "h": 0.01},
         "failed at t=0.3 with step size 0.01: max_steps=100 step attempts reached"),
        ({"status": physode.Status.MAX_STEPS, "h": 0.01, "adaptive": False},
         "failed at t=0.3 with step size 0.01: max_steps=100 steps reached; the time span needs "
         "more steps of step_size"),
        ({"status": physode.Status.STEP_SIZE_UNDERFLOW},
         "failed at t=0.3 with step size 1e-14: step size underflow; the error control rejected "
         "every step down to the limit of floating point resolution"),
        ({"status": physode.Status.NON_FINITE, "h": math.nan},
         "failed at t=0.3, before the first step: non-finite state; func produced NaN or inf "
         "(the solution blows up or func returns NaN/inf here)"),
        ({"status": physode.Status.MAX_STEPS, "h": 0.01, "backward": True},
         "failed at t=0.3 with step size 0.01: max_steps=100 step attempts reached"),
    ],
)  # fmt: skip
def test_a_failed_solve_says_once_where_it_stopped_and_why(settings, reason, monkeypatch):
    # The solver's message says the time and step size too: the trainer says them once.
    solve_batch = Trainer._solve_batch

    def failing(self, data, batch):
        if self.epoch == 1:
            _solver_error(**settings)
        return solve_batch(self, data, batch)

    monkeypatch.setattr(Trainer, "_solve_batch", failing)
    with pytest.raises(physode.TrainingError) as caught:
        _trainer(batch_size=1).fit()
    solve = "Opt-Disc backward solve" if settings.get("backward") else "solve"
    summary = caught.value.summary
    assert summary.startswith(
        f"training stopped in epoch 2, batch 1 of 4: the {solve} of its 1 window (training "
        "trajectory "
    )
    assert summary.endswith(f") {reason}") and summary.count("t=") == 2  # its start, and 0.3
    assert ("a larger max_steps" in str(caught.value)) == (
        settings["status"] == physode.Status.MAX_STEPS
    )


@pytest.mark.parametrize(
    "gradient, suggested",
    [
        ("aca", None),  # the exact modes share their solves: another one would fail the same
        ("opt-disc", "an exact gradient (gradient='aca' or 'disc-opt') or "
         "physode.OptDisc(restart='steps')"),
        (physode.OptDisc(restart="steps"), "an exact gradient (gradient='aca' or 'disc-opt'), or "),
    ],
)  # fmt: skip
def test_a_failed_batch_suggests_the_gradient_modes_that_would_change_it(
    gradient, suggested, monkeypatch
):
    monkeypatch.setattr(Trainer, "_solve_batch", lambda self, data, batch: _solver_error())
    with pytest.raises(physode.TrainingError) as caught:
        _trainer(gradient=gradient).fit()
    message = str(caught.value)
    if suggested is None:
        assert "gradient=" not in message and "OptDisc" not in message
    else:
        assert f"another method, {suggested}" in message
        assert message.count("restart='steps'") == ("or physode" in suggested)


def test_a_solve_that_used_up_its_steps_says_its_time_into_the_windows_once():
    # A real solve that runs out of steps, of windows that start at different times.
    with pytest.raises(physode.TrainingError) as caught:
        _trainer(max_steps=3).fit()
    summary = caught.value.summary
    assert re.search(
        r"failed \d\S* into the windows with step size \d\S*: max_steps=3 step attempts "
        r"reached$",
        summary,
    )
    assert summary.count("step size") == 1


def test_per_sample_windows_that_cannot_be_solved_stop_training_naming_them(monkeypatch):
    # Per-sample solves never raise: the rows that fail make the loss NaN, which stops the run.
    trainer = _trainer(step_control="per-sample", window_stride=1, batch_size=64)
    model = trainer.model
    model.rows = True
    train_epoch = Trainer.train_epoch

    def poisoned_in_epoch_2(self):
        model.poisoned = self.epoch == 1
        return train_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", poisoned_in_epoch_2)
    with pytest.raises(physode.TrainingError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert message.startswith("training stopped in epoch 2, batch 1 of ")
    # The windows whose values pass 2: trajectories 2 and 3 (from 3 and 4) near their start.
    pattern = (
        r": \d of its 64 windows could not be solved \(training trajectory [23] from t=0\.?\d* "
        r"stopped (at t=0 |at the start of the windows )"
    )
    assert re.search(pattern, message)
    assert "(NON_FINITE)" in message and "so its loss is nan" in message
    assert torch.isfinite(model.k) and trainer.epoch == 1


# ------------------------------------------------------------------ other exceptions


class Raising(Decay):
    """A :class:`Decay` whose ``forward`` raises a RuntimeError on its ``on_call``-th call, as a
    bug in a model would (``None``: never); ``calls`` counts them."""

    def __init__(self, on_call: int | None = None) -> None:
        super().__init__()
        self.on_call, self.calls = on_call, 0

    def forward(self, t, y):
        self.calls += 1
        if self.calls == self.on_call:
            raise RuntimeError("a bug in forward")
        return super().forward(t, y)


def _calls_after(epochs: int) -> int:
    """How many calls of the model a run of ``epochs`` epochs makes."""
    trainer = _trainer(model=Raising(), epochs=epochs)
    trainer.fit()
    return trainer.model.calls


def test_an_error_of_the_model_goes_back_to_the_last_completed_epoch_and_goes_on(tmp_path):
    # The model raises in the middle of epoch 3, after some of its batches have stepped.
    on_call = (_calls_after(2) + _calls_after(3)) // 2
    trainer = _trainer(model=Raising(on_call), checkpoint_dir=tmp_path, log=tmp_path / "log.csv")
    with pytest.raises(RuntimeError) as caught:
        trainer.fit()
    error = caught.value
    assert type(error) is RuntimeError and str(error) == "a bug in forward"  # not wrapped
    last = tmp_path / "last.pt"
    assert error.__notes__ == [
        "physode: training stopped on this error during epoch 3; the trainer holds the run after "
        "epoch 2, as it was then, and trainer.fit() continues it, as does "
        f"trainer.load_checkpoint({str(last)!r}) on a new trainer"
    ]
    twin = _trainer(model=Raising(), epochs=2)
    twin.fit()
    assert trainer.epoch == 2 and len(trainer.history) == 2
    assert _same_weights(trainer.model, twin.model)
    assert torch.load(last, weights_only=True)["epoch"] == 2
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3
    # Fixed, the run goes on as if nothing had happened: optimiser and random state included.
    trainer.model.on_call = None
    trainer.fit()
    whole = _trainer(model=Raising())
    whole.fit()
    assert _same_weights(trainer.model, whole.model)
    assert [r["loss"] for r in trainer.history] == [r["loss"] for r in whole.history]


def test_an_error_whose_checkpoint_cannot_be_written_still_goes_on_unchanged(
    tmp_path, monkeypatch
):
    # last.pt is due every 5 epochs, so going back must write it, and the disk is full.
    on_call = (_calls_after(2) + _calls_after(3)) // 2
    trainer = _trainer(model=Raising(on_call), checkpoint_dir=tmp_path, checkpoint_every=5)

    def full(self, path):
        raise OSError("No space left on device")

    monkeypatch.setattr(Trainer, "save_checkpoint", full)
    with pytest.raises(RuntimeError) as caught:
        trainer.fit()
    assert str(caught.value) == "a bug in forward"
    assert caught.value.__notes__ == [
        "physode: training stopped on this error during epoch 3; the trainer holds the run "
        "after epoch 2, as it was then, and trainer.fit() continues it; it could not be kept on "
        "disk (No space left on device)"
    ]
    assert trainer.epoch == 2  # the weights went back before the write was tried


def test_a_failed_batch_whose_checkpoint_cannot_be_written_still_raises_training_error(
    tmp_path, monkeypatch
):
    # Batch 2 of epoch 3 fails; last.pt is due every 5 epochs, so going back must write it,
    # and the disk is full: the TrainingError still says what failed, and that nothing was kept.
    _failing(monkeypatch, lambda e, b, n: (e, b) == (3, 2))
    trainer = _trainer(checkpoint_dir=tmp_path, checkpoint_every=5, log=tmp_path / "log.csv")
    save_atomically = trainer_module.save_atomically

    def full(path, value, what):
        if what == "checkpoint":
            raise physode.InvalidArgumentError(
                f"cannot write the checkpoint {path}: No space left on device"
            )
        return save_atomically(path, value, what)

    monkeypatch.setattr(trainer_module, "save_atomically", full)
    with pytest.raises(physode.TrainingError) as caught:
        trainer.fit()
    error = caught.value
    assert str(error).startswith("training stopped in epoch 3, batch 2 of 4: the solve of its ")
    assert (
        "The trainer is back at the end of epoch 2 (weights, optimiser, history), as it was "
        f"then; it could not be kept on disk (cannot write the checkpoint {tmp_path / 'last.pt'}:"
        " No space left on device)."
    ) in str(error)
    assert error.checkpoint is None and error.unsaved.endswith("No space left on device")
    assert trainer.epoch == 2 and trainer.last_checkpoint is None
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3


def test_train_epoch_on_its_own_leaves_no_half_trained_epoch(monkeypatch):
    # A batch that fails raises TrainingError, the error of fit(), and the trainer goes back:
    # the epoch that follows is the one a fresh trainer runs (random state included).
    _failing(monkeypatch, lambda e, b, n: (e, b) == (1, 3))
    trainer = _trainer()
    with pytest.raises(physode.TrainingError, match=r"^training stopped in epoch 1, batch 3 of 4"):
        trainer.train_epoch()
    monkeypatch.undo()
    fresh = _trainer()
    assert _same_weights(trainer.model, fresh.model)
    assert trainer.train_epoch()["loss"] == fresh.train_epoch()["loss"]
    assert _same_weights(trainer.model, fresh.model)
    # So does any other exception, which goes on unchanged.
    trainer, fresh = _trainer(model=Raising(_calls_after(1) // 2)), _trainer(model=Raising())
    with pytest.raises(RuntimeError, match="^a bug in forward$"):  # no note: fit() adds it
        trainer.train_epoch()
    assert trainer.epoch == 0 and _same_weights(trainer.model, fresh.model)
    assert trainer.train_epoch()["loss"] == fresh.train_epoch()["loss"]
    assert _same_weights(trainer.model, fresh.model)


# ------------------------------------------------------------------ skip


@pytest.mark.parametrize("how", ["solve", "gradient"])
def test_skip_leaves_the_failed_batch_out_and_counts_it(how, monkeypatch):
    calls = _failing(monkeypatch, lambda e, b, n: (e, b) == (2, 3), how)
    trainer = _trainer(on_failed_batch="skip")
    result = trainer.fit()
    assert [row["skipped_batches"] for row in result.history] == [0, 1, 0, 0]
    assert [row["n_batches"] for row in result.history] == [4, 4, 4, 4]
    # No step was taken: batch 4 of epoch 2 starts from the weights batch 3 started from.
    starts = {(e, b): k for e, b, k in calls}
    assert starts[2, 4] == starts[2, 3] != starts[2, 2]
    assert math.isfinite(result.history[1]["loss"])


def test_skip_with_lbfgs_undoes_a_step_whose_line_search_failed(monkeypatch):
    calls = _failing(monkeypatch, lambda e, b, n: (e, b, n) == (2, 1, 2), "solve")
    trainer = _trainer(optimizer="lbfgs", lr=1.0, batch_size=2, on_failed_batch="skip")
    result = trainer.fit()
    assert [row["skipped_batches"] for row in result.history] == [0, 1, 0, 0]
    moved = [k for e, b, k in calls if (e, b) == (2, 1)]
    assert moved[1] != moved[0]  # the line search had moved the weights
    assert [k for e, b, k in calls if (e, b) == (2, 2)][0] == moved[0]  # and they went back


def _same_state(a, b) -> bool:
    """Whether two optimiser states (nested dicts, lists, tensors, numbers) are equal."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def test_skip_with_lbfgs_puts_its_whole_state_back_without_copying_its_history(monkeypatch):
    # Batch 3 of epoch 2 fails in its line search, once earlier steps have built a history.
    _failing(monkeypatch, lambda e, b, n: (e, b, n) == (2, 3, 2), "solve")
    trainer = _trainer(optimizer="lbfgs", lr=1.0, batch_size=2, on_failed_batch="skip")
    before_step, undo_step, undone = Trainer._before_step, Trainer._undo_step, []

    def kept(self):
        before = before_step(self)
        self._whole = copy.deepcopy(self.optimizer.state_dict())  # what must come back
        history = self.optimizer.state_dict()["state"].get(0, {}).get("old_dirs", [])
        saved = before[1]["state"].get(0, {}).get("old_dirs", [])
        assert all(x is y for x, y in zip(history, saved, strict=True))  # shared, not copied
        return before

    def checked(self, before):
        undo_step(self, before)
        state = self.optimizer.state_dict()
        undone.append(len(state["state"][0]["old_dirs"]))
        assert _same_state(state, self._whole)

    monkeypatch.setattr(Trainer, "_before_step", kept)
    monkeypatch.setattr(Trainer, "_undo_step", checked)
    result = trainer.fit()
    assert [row["skipped_batches"] for row in result.history] == [0, 1, 0, 0]
    assert len(undone) == 1 and undone[0] >= 1  # a history was put back


def test_skip_with_lbfgs_takes_its_loss_scale_from_the_first_batch_that_succeeds(monkeypatch):
    # The first batch of the run has a finite loss but a NaN gradient: it is skipped, and the
    # scale L-BFGS sees the objective in comes from batch 2, as if batch 1 had not been there.
    _failing(monkeypatch, lambda e, b, n: (e, b) == (1, 1), "gradient")
    scales = []
    evaluate = Trainer._evaluate

    def recorded(self, batch, evaluations):
        scaled = evaluate(self, batch, evaluations)
        scales.append((self._batch_number, self.loss_scale, evaluations[0][2].item()))
        return scaled

    monkeypatch.setattr(Trainer, "_evaluate", recorded)
    trainer = _trainer(optimizer="lbfgs", lr=1.0, batch_size=2, epochs=1, on_failed_batch="skip")
    result = trainer.fit()
    assert result.history[0]["skipped_batches"] == 1
    batch, scale, objective = scales[0]  # the first evaluation that succeeded
    assert batch == 2 and scale == objective


def test_skip_stops_when_every_batch_of_an_epoch_fails(monkeypatch):
    _failing(monkeypatch, lambda e, b, n: e == 2)
    trainer = _trainer(on_failed_batch="skip")
    with pytest.raises(physode.TrainingError) as caught:
        trainer.fit()
    message = str(caught.value)
    assert message.startswith(
        "training stopped in epoch 2: every one of its 4 batches failed, the last (batch 4) as "
        "the solve of its 4 windows"
    )
    assert "on_failed_batch='skip', which" not in message  # it is set already
    assert trainer.epoch == 1



def test_skip_stops_when_the_one_batch_of_an_epoch_fails_saying_so_in_the_singular(monkeypatch):
    _failing(monkeypatch, lambda e, b, n: e == 2)
    trainer = _trainer(on_failed_batch="skip", batches_per_epoch=1)
    with pytest.raises(physode.TrainingError) as caught:
        trainer.fit()
    assert str(caught.value).startswith(
        "training stopped in epoch 2: its one batch failed as the solve of its 4 windows"
    )

def test_skip_stops_after_too_many_failed_batches_in_a_row(monkeypatch):
    monkeypatch.setattr(trainer_module, "MAX_SKIPPED_IN_A_ROW", 2)
    _failing(monkeypatch, lambda e, b, n: (e, b) in ((1, 1), (2, 2), (2, 3)))
    trainer = _trainer(on_failed_batch="skip")
    with pytest.raises(physode.TrainingError) as caught:
        trainer.fit()
    assert str(caught.value).startswith(
        "training stopped in epoch 2: 2 batches in a row failed (on_failed_batch='skip' stops "
        "at 2), the last (batch 3 of 4) as the solve"
    )


def test_skip_counts_failed_batches_in_a_row_across_epochs(tmp_path, monkeypatch):
    # The last batch of epoch 1 and the first of epoch 2 fail: two in a row, though each
    # epoch has but one failure.
    monkeypatch.setattr(trainer_module, "MAX_SKIPPED_IN_A_ROW", 2)
    _failing(monkeypatch, lambda e, b, n: (e, b) in ((1, 4), (2, 1)))
    trainer = _trainer(on_failed_batch="skip", checkpoint_dir=tmp_path)
    with pytest.raises(physode.TrainingError) as caught:
        trainer.fit()
    assert str(caught.value).startswith(
        "training stopped in epoch 2: 2 batches in a row failed since batch 4 of epoch 1 "
        "(on_failed_batch='skip' stops at 2, counting across epochs), the last (batch 1 of 4) as "
        "the solve"
    )
    assert trainer.epoch == 1 and trainer.history[0]["skipped_batches"] == 1
    # The count is part of the run: a checkpoint keeps it, and the resumed run stops alike.
    resumed = _trainer(on_failed_batch="skip", checkpoint_dir=tmp_path)
    resumed.load_checkpoint(tmp_path / "last.pt")
    with pytest.raises(physode.TrainingError, match="in a row failed since batch 4 of epoch 1"):
        resumed.fit()
    # And fit() on the stopped trainer, which went back to the end of epoch 1, meets it again.
    with pytest.raises(physode.TrainingError, match="in a row failed since batch 4 of epoch 1"):
        trainer.fit()


def test_train_epoch_alone_names_the_call_a_row_of_failures_began_in(monkeypatch):
    # train_epoch() on its own counts no epoch: each call runs "epoch 1" again. The last batch
    # of the first call and the first of the second fail: the row spans the calls.
    monkeypatch.setattr(trainer_module, "MAX_SKIPPED_IN_A_ROW", 2)
    _failing(monkeypatch, lambda e, b, n: (b, n) in ((4, 1), (1, 2), (1, 3)))
    trainer = _trainer(on_failed_batch="skip")
    assert trainer.train_epoch()["epoch"] == 1
    with pytest.raises(physode.TrainingError) as caught:
        trainer.train_epoch()
    assert str(caught.value).startswith(
        "training stopped in epoch 1: 2 batches in a row failed since batch 4 of an earlier "
        "train_epoch() call (on_failed_batch='skip' stops at 2, counting across train_epoch() "
        "calls, which alone count no epoch), the last (batch 1 of 4) as the solve"
    )
    assert trainer.epoch == 0
    # The trainer went back to where the failed call began, in the row the first call began;
    # fit() then runs epoch 1 again, and its first batch ends that row too.
    with pytest.raises(physode.TrainingError) as caught:
        trainer.fit()
    assert "failed since batch 4 of an earlier train_epoch() call" in str(caught.value)


def test_a_row_of_failures_within_one_train_epoch_call_names_no_other_call(monkeypatch):
    monkeypatch.setattr(trainer_module, "MAX_SKIPPED_IN_A_ROW", 2)
    # The second call fails twice in a row; the first call's failure was ended by a success.
    _failing(monkeypatch, lambda e, b, n: (b, n) in ((2, 1), (2, 2), (3, 2)))
    trainer = _trainer(on_failed_batch="skip")
    assert trainer.train_epoch()["skipped_batches"] == 1
    with pytest.raises(physode.TrainingError) as caught:
        trainer.train_epoch()
    assert str(caught.value).startswith(
        "training stopped in epoch 1: 2 batches in a row failed (on_failed_batch='skip' stops "
        "at 2), the last (batch 3 of 4) as the solve"
    )


def test_a_batch_that_succeeds_ends_the_row_of_failures_across_epochs(monkeypatch):
    monkeypatch.setattr(trainer_module, "MAX_SKIPPED_IN_A_ROW", 2)
    _failing(monkeypatch, lambda e, b, n: (e, b) in ((1, 4), (2, 2), (3, 1)))
    result = _trainer(on_failed_batch="skip").fit()
    assert [row["skipped_batches"] for row in result.history] == [1, 1, 1, 0]


def _recorded_solves(monkeypatch, trainer):
    """The training solves of ``trainer``, as (epoch, solution): a failed solve's partial one."""
    solve_rows, solves = trainer_module.solve_rows, []

    def recorded(*args, **kwargs):
        try:
            sol = solve_rows(*args, **kwargs)
        except physode.SolverError as exc:
            solves.append((trainer.epoch + 1, exc.solution))
            raise
        solves.append((trainer.epoch + 1, sol))
        return sol

    monkeypatch.setattr(trainer_module, "solve_rows", recorded)
    return solves


@pytest.mark.parametrize(
    ("optimizer", "how"), [("adam", "gradient"), ("adam", "poison"), ("lbfgs", "poison")]
)
def test_the_log_counts_the_evaluations_of_skipped_batches(optimizer, how, monkeypatch):
    # Batch 3 of epoch 2 fails: after its solve and backward pass (a NaN gradient), in its solve
    # (a model that turns NaN: the solver stops with a partial solution), or for L-BFGS in the
    # second evaluation of its line search, after a first that succeeded.
    when = 2 if optimizer == "lbfgs" else 1
    calls = _failing(monkeypatch, lambda e, b, n: (e, b, n) == (2, 3, when), how)
    lbfgs = optimizer == "lbfgs"
    trainer = _trainer(on_failed_batch="skip", optimizer=optimizer, lr=1.0 if lbfgs else 0.05)
    solves = _recorded_solves(monkeypatch, trainer)
    result = trainer.fit()
    assert [row["skipped_batches"] for row in result.history] == [0, 1, 0, 0]
    for row in result.history:
        mine = [sol.stats for epoch, sol in solves if epoch == row["epoch"]]
        assert row["nfe_forward"] == sum(stats.nfe for stats in mine)
        assert row["nfe_backward"] == sum(stats.nfe_backward for stats in mine)
    # One solve per evaluation: the skipped batch's, the failed one last, did work to count.
    pairs = zip(calls, solves, strict=True)
    skipped = [sol.stats for call, (_, sol) in pairs if call[:2] == (2, 3)]
    assert len(skipped) == when and all(stats.nfe > 0 for stats in skipped)
    assert how == "poison" or skipped[-1].nfe_backward > 0


def test_on_failed_batch_takes_stop_or_skip():
    with pytest.raises(physode.InvalidArgumentError, match=r"on_failed_batch='ignore' \(choose "
                       r"one of \['stop', 'skip'\]\)"):  # fmt: skip
        TrainConfig(on_failed_batch="ignore").validate()


def test_a_checkpoint_resumes_with_on_failed_batch_changed(tmp_path, monkeypatch):
    _failing(monkeypatch, lambda e, b, n: (e, b) == (3, 1))
    trainer = _trainer(checkpoint_dir=tmp_path)
    with pytest.raises(physode.TrainingError):
        trainer.fit()
    resumed = _trainer(checkpoint_dir=tmp_path, on_failed_batch="skip")
    resumed.load_checkpoint(tmp_path / "last.pt")
    result = resumed.fit()
    assert [row.get("skipped_batches") for row in result.history] == [None, None, 1, 0]


# ------------------------------------------------------------------ validation


def test_validation_that_cannot_be_solved_counts_as_inf_with_a_warning(tmp_path, monkeypatch):
    trainer = _trainer(val_fraction=0.25, checkpoint_dir=tmp_path, log=tmp_path / "log.json")
    validation_loss = Trainer.validation_loss

    def failing_in_epoch_3(self):
        if self.epoch == 2:
            _solver_error()
        return validation_loss(self)

    monkeypatch.setattr(Trainer, "validation_loss", failing_in_epoch_3)
    with pytest.warns(physode.PhysodeWarning) as caught:
        result = trainer.fit()
    messages = [str(w.message) for w in caught]
    assert messages == [
        "epoch 3: the validation loss is taken as inf, as a solve failed at t=0.3 with step "
        "size 1e-14: step size underflow; the error control rejected every step down to the "
        "limit of floating point resolution; the epoch counts as one without improvement "
        "(patience, restore_best, best.pt)"
    ]
    vals = [row["val_loss"] for row in result.history]
    assert vals[2] == math.inf and all(math.isfinite(v) for i, v in enumerate(vals) if i != 2)
    assert result.best_epoch != 3
    assert '"val_loss": null' in (tmp_path / "log.json").read_text()


# ------------------------------------------------------------------ physode train


@pytest.fixture
def stored(oscillator_h5):
    """The shared small data set of six oscillators (conftest.py)."""
    return oscillator_h5


def test_physode_train_stops_in_one_paragraph_naming_the_checkpoint_and_resumes_with_skip(
    stored, tmp_path, capsys, monkeypatch
):
    from physode.cli import main

    def argv(*more: str) -> list[str]:
        return ["train", str(stored), "--epochs", "4", "--window", "5", "--batch-size", "4",
                "--model", "neural", "--width", "8", "--depth", "1", "--quiet",
                "--checkpoint-dir", str(tmp_path / "ck"), *more]  # fmt: skip

    solve_batch = Trainer._solve_batch

    def failing_in_epoch_3(self, data, batch):
        if data is self.train_data and self.epoch == 2:
            _solver_error()
        return solve_batch(self, data, batch)

    monkeypatch.setattr(Trainer, "_solve_batch", failing_in_epoch_3)
    assert main(argv()) == 2
    err = capsys.readouterr().err
    last = tmp_path / "ck" / "last.pt"
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("physode train: error: training stopped in epoch 3, batch 1 of ")
    assert (
        f"{last} holds the run after epoch 2, its weights all finite: rerun the same command "
        f"with --resume {last} --on-failed-batch skip to leave such batches out, or start a new "
        f"run from its weights with other settings, e.g. `physode train ... --init-from {last} "
        "--lr 0.001`, or start anew"
    ) in err
    assert "--lr" in err and "--grad-clip" in err and "lr=" not in err
    assert torch.load(last, weights_only=True)["epoch"] == 2
    # Resumed with skip, every batch of epoch 3 fails: the run stops again, saying so.
    assert main(argv("--resume", str(last), "--on-failed-batch", "skip")) == 2
    err = capsys.readouterr().err
    assert "training stopped in epoch 3: every one of its" in err
    assert "--on-failed-batch skip" not in err
    monkeypatch.undo()
    assert main(argv("--resume", str(last), "--on-failed-batch", "skip")) == 0


def test_physode_train_stopped_in_its_first_epoch_says_that_nothing_was_saved_as_a_sentence(
    stored, capsys, monkeypatch
):
    from physode.cli import main

    def failing(self, data, batch):
        _solver_error()

    monkeypatch.setattr(Trainer, "_solve_batch", failing)
    argv = ["train", str(stored), "--epochs", "2", "--window", "5", "--model", "neural",
            "--width", "8", "--depth", "1", "--quiet"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("physode train: error: training stopped in epoch 1, batch 1 of ")
    assert ". No epoch was completed, so nothing was saved; start anew with other settings (" in err


def test_physode_train_stopped_with_a_full_disk_says_what_failed_and_that_nothing_was_saved(
    stored, tmp_path, capsys, monkeypatch, last_pt_disk_full
):
    from physode.cli import main

    solve_batch = Trainer._solve_batch

    def failing_in_epoch_2(self, data, batch):
        if data is self.train_data and self.epoch == 1:
            _solver_error()
        return solve_batch(self, data, batch)

    monkeypatch.setattr(Trainer, "_solve_batch", failing_in_epoch_2)
    # best.pt of epoch 1 fits on the disk, last.pt no more (the last_pt_disk_full fixture)
    ck = tmp_path / "ck"
    argv = ["train", str(stored), "--epochs", "3", "--window", "5", "--model", "neural",
            "--width", "8", "--depth", "1", "--quiet", "--checkpoint-dir", str(ck),
            "--checkpoint-every", "5"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("physode train: error: training stopped in epoch 2, batch 1 of ")
    assert (
        f". Nothing was saved (cannot write the checkpoint {ck / 'last.pt'}: disk full); start "
        "anew with other settings ("
    ) in err


def test_physode_train_says_how_many_batches_it_skipped_and_reports_them(
    stored, tmp_path, capsys, monkeypatch
):
    import json

    from physode.cli import main

    solve_batch = Trainer._solve_batch
    batches = []

    def failing_first_in_epoch_2(self, data, batch):
        if data is self.train_data and self.epoch == 1:
            batches.append(batch)
            if len(batches) == 1:
                _solver_error()
        return solve_batch(self, data, batch)

    monkeypatch.setattr(Trainer, "_solve_batch", failing_first_in_epoch_2)
    out = tmp_path / "run"
    assert main(["train", str(stored), "--epochs", "3", "--window", "5", "--batch-size", "4",
                 "--model", "neural", "--width", "8", "--depth", "1", "--out", str(out),
                 "--on-failed-batch", "skip"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "skipped 1 failed batch in 1 epoch (--on-failed-batch skip; the log's " in printed
    assert json.loads((out / "report.json").read_text())["skipped_batches"] == 1
    # A run that skipped nothing says nothing of it, and reports 0.
    monkeypatch.setattr(Trainer, "_solve_batch", solve_batch)
    assert main(["train", str(stored), "--epochs", "1", "--window", "5", "--model", "neural",
                 "--width", "8", "--depth", "1", "--out", str(out)]) == 0  # fmt: skip
    assert "skipped" not in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["skipped_batches"] == 0
