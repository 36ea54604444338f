"""The process pool of ``prepare`` runs one BLAS/OpenMP thread per reader process.

Each forked reader inherits the parent's BLAS thread pools (one thread per core); without the
pool initializer ``limit_threads`` the readers oversubscribe the cores (bench/RESULTS.md). The test
gives the parent two BLAS threads, prepares through a two-process pool with a reader that reports
what its process sees, and checks every record was read under one thread, in both processes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from ecg_ray.data.prepare import prepare_store
from ecg_ray.data.reader_threads import limit_threads, thread_counts
from ecg_ray.data.sources.synthetic import SyntheticSource
from ecg_ray.data.store import EcgStore


class ThreadReportingSource(SyntheticSource):
    """Synthetic records whose metadata says which process read them, under how many BLAS threads."""

    def read(self, ref):
        record = super().read(ref)
        counts = thread_counts()
        record.metadata.update(reader_pid=os.getpid(), blas_threads_max=max(counts.values()),
                               blas_libraries=len(counts), omp_variable=os.environ.get("OMP_NUM_THREADS", ""))
        return record


@pytest.fixture
def parent_with_two_blas_threads(monkeypatch):
    import numpy  # noqa: F401 - its OpenBLAS must be loaded for there to be something to limit

    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                     "NUMEXPR_NUM_THREADS"):
        monkeypatch.setenv(variable, "2")  # restored after the test (limit_threads writes them)
    before = thread_counts()
    if not before:
        pytest.skip("no BLAS library found through /proc/self/maps (not Linux)")
    limit_threads(2)
    if set(thread_counts().values()) != {2}:
        limit_threads(max(before.values()))
        pytest.skip("this BLAS build cannot run 2 threads")
    yield
    limit_threads(max(before.values()))


def test_pool_readers_run_one_blas_thread_each(parent_with_two_blas_threads, tmp_path):
    source = ThreadReportingSource(n_records=400, seed=3)
    prepare_store([source], tmp_path / "store.zarr", workers=2, progress=False)
    records = EcgStore(tmp_path / "store.zarr").records
    assert len(records) == 400
    assert records["reader_pid"].nunique() == 2 and os.getpid() not in set(records["reader_pid"])
    # numpy's and scipy's OpenBLAS were both found and set to one thread, in every reader process.
    assert set(records["blas_libraries"]) == {len(thread_counts())}
    assert set(records["blas_threads_max"]) == {1}
    assert set(records["omp_variable"]) == {"1"}
    # The parent keeps its own setting: the limit is the readers' alone.
    assert set(thread_counts().values()) == {2}
    # Same signals as an in-process read (no thread pool): the limit changes speed, not results.
    store = EcgStore(tmp_path / "store.zarr")
    for index in (0, 199, 399):
        np.testing.assert_array_equal(store.signal(index), source.read(source.refs()[index]).signal)
