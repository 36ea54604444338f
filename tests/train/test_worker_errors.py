"""Errors raised inside Ray Train workers reach the user as one line; the traceback goes to RUN/error.log."""

from __future__ import annotations

import pytest

from ecg_ray.errors import EcgRayError, StoreError
from ecg_ray.train.failures import ERROR_LOG, TrainingError, find_cause, training_failure
from ecg_ray.train.step import TrainingDivergedError, check_epoch_loss


def _worker_group_error(failures: dict[int, BaseException]):
    from ray.train.v2.api.exceptions import WorkerGroupError

    # Ray's message carries each worker's traceback: many lines the user should not have to read.
    text = "\n".join(f"[Rank {rank}]\nTraceback (most recent call last):\n  File \"x.py\", line 1\n{exc!r}"
                     for rank, exc in failures.items())
    return WorkerGroupError(text, failures)


def _nan_error() -> TrainingDivergedError:
    with pytest.raises(TrainingDivergedError) as caught:
        check_epoch_loss(float("nan"), 3)
    return caught.value


def test_a_diverged_loss_is_an_ecg_ray_error():
    error = _nan_error()
    assert isinstance(error, EcgRayError) and isinstance(error, FloatingPointError)


def test_a_worker_error_of_ours_is_told_in_one_line_and_the_traceback_is_logged(tmp_path):
    failure = _worker_group_error({0: _nan_error(), 1: RuntimeError("peer lost")})
    error = training_failure(failure, str(tmp_path))
    message = str(error)
    assert isinstance(error, TrainingError) and "\n" not in message
    assert message.startswith("the mean loss of epoch 3 is nan")
    assert f"worker 0; full traceback in {tmp_path / ERROR_LOG}" in message
    log = (tmp_path / ERROR_LOG).read_text()
    assert "Traceback (most recent call last)" in log and "WorkerGroupError" in log and "peer lost" in log


def test_the_rank_with_our_error_is_named_even_if_another_rank_failed_first(tmp_path):
    failure = _worker_group_error({0: RuntimeError("connection reset by peer"),
                                   1: StoreError("/data/s.zarr: chunk signal/c/3/0 is corrupt (records r1-r9)")})
    message = str(training_failure(failure, str(tmp_path)))
    assert message.startswith("/data/s.zarr: chunk signal/c/3/0 is corrupt (records r1-r9) (worker 1;")


def test_an_error_from_a_ray_data_read_task_is_unwrapped(tmp_path):
    """A read task's StoreError reaches the worker inside a RayTaskError whose text is a traceback."""
    from ray.exceptions import RayTaskError

    cause = StoreError("/data/s.zarr: chunk signal/c/0/0 checksum mismatch")
    wrapped = RayTaskError("ReadZarr", "Traceback (most recent call last):\n  ...\nStoreError: ...", cause)
    for inside in (wrapped, wrapped.as_instanceof_cause()):
        rank, found = find_cause(_worker_group_error({0: inside}))
        assert rank == 0 and found is cause
    message = str(training_failure(_worker_group_error({0: wrapped.as_instanceof_cause()}), str(tmp_path)))
    assert message.startswith("/data/s.zarr: chunk signal/c/0/0 checksum mismatch (worker 0;") and "\n" not in message


def test_an_unknown_error_keeps_a_one_line_summary_and_the_log_path(tmp_path):
    try:
        try:
            {}["missing"]
        except KeyError as inner:
            raise ValueError("bad shape (3, 4)\nsecond line of detail") from inner
    except ValueError as exc:
        worker_exc = exc
    message = str(training_failure(_worker_group_error({1: worker_exc}), str(tmp_path)))
    assert message == (f"training failed in worker 1: ValueError: bad shape (3, 4) "
                       f"(full traceback in {tmp_path / ERROR_LOG})")


def test_a_controller_error_is_told_without_a_rank(tmp_path):
    from ray.train.v2.api.exceptions import ControllerError

    message = str(training_failure(ControllerError(RuntimeError("placement group timed out")), str(tmp_path)))
    assert message.startswith("training failed in Ray Train: RuntimeError: placement group timed out")


def test_the_error_log_is_appended_not_replaced(tmp_path):
    (tmp_path / ERROR_LOG).write_text("an earlier failure\n")
    training_failure(_worker_group_error({0: RuntimeError("second")}), str(tmp_path))
    log = (tmp_path / ERROR_LOG).read_text()
    assert log.startswith("an earlier failure\n") and "second" in log


def test_an_unwritable_run_directory_still_gives_the_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    message = str(training_failure(_worker_group_error({0: RuntimeError("boom")}), str(blocker / "run")))
    assert "RuntimeError: boom" in message and "could not be written" in message


def test_the_cli_prints_a_multi_line_message_as_one_line(monkeypatch, capsys):
    import ecg_ray.cli as cli

    def fail(args):
        raise EcgRayError("first part\n  second part")

    monkeypatch.setitem(cli.COMMANDS, "report", fail)
    assert cli.main(["report", "somewhere"]) == 2
    assert capsys.readouterr().err == "ecg-ray report: error: first part; second part\n"
