"""Global shuffle at corpus scale: i.i.d. batches from a store written source by source.

12,000 records written grouped (first half labelled A, second half B), several read tasks per
worker, 2 workers x 2 epochs, batches of 256 through the stream as the README shows it.
"""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.data.sampling import StorePart, epoch_order, plan_epoch
from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import select_records, train_crops
from tests.data.synthetic_stores import grouped_store

CROP = 50


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    root = tmp_path_factory.mktemp("grouped")
    return {codec: grouped_store(root / codec, {"A": 6000, "B": 6000}, codec=codec) for codec in ("none", "zstd")}


def _epoch_batches(store, rank, epoch, records_per_task=2048, **kwargs):
    """Batches of one worker's epoch, exactly as the README streams them (3 read tasks per worker:
    the automatic task size, 8192 records, would give each worker's 6,000 records one task)."""
    train = select_records(store)
    ds, info = train_crops(store, train, crop=CROP, seed=0, epoch=epoch, with_labels=True,
                           shard_index=rank, num_shards=2, records_per_task=records_per_task, **kwargs)
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds.iter_torch_batches(batch_size=256)]
    return batches, info


def _check_mixing(store, **kwargs):
    records = {}
    for epoch in range(2):
        seen = []
        for rank in range(2):
            batches, info = _epoch_batches(store, rank, epoch, **kwargs)
            assert info.read_tasks >= 2, "the test must cover several read tasks per worker"
            full = [b for b in batches if len(b["record_index"]) == 256]
            shares = [b["labels"][:, 0].mean() for b in full]  # label column 0 is A
            assert min(shares) >= 0.35 and max(shares) <= 0.65, (rank, epoch, min(shares), max(shares))
            labels = np.concatenate([b["labels"][:, 0] for b in batches])
            assert 0.40 <= labels.mean() <= 0.60, (rank, epoch, labels.mean())
            index = np.concatenate([b["record_index"] for b in batches])
            assert len(index) == 6000 and len(np.unique(index)) == 6000
            # every crop is cut from the record it claims (lead 0 carries the record number)
            signal = np.concatenate([b["signal"][:, 0, 0] for b in batches])
            np.testing.assert_array_equal(signal, index.astype(np.float32))
            records[(rank, epoch)] = set(index.tolist())
            seen.append(records[(rank, epoch)])
        assert not seen[0] & seen[1], "the workers' shards of an epoch must be disjoint"
        assert len(seen[0] | seen[1]) == 12000
    overlap = len(records[(0, 0)] & records[(0, 1)]) / len(records[(0, 0)])
    assert overlap < 0.9, f"rank 0 saw {overlap:.0%} of the same records in epochs 0 and 1"


def test_batches_mix_a_grouped_store(ray_session, grouped):
    store = EcgStore(grouped["none"])
    _check_mixing(store)


def test_block_shuffle_of_a_compressed_store_mixes_too(ray_session, grouped):
    """zstd chunks are decoded whole: the default there is a block shuffle, which must mix as well."""
    store = EcgStore(grouped["zstd"])
    batches, info = _epoch_batches(store, 0, 0)
    # each worker: 6,000 records in 3 tasks of 2,000; runs of 2000 // 256 = 7 (a chunk holds 2184 records)
    assert info.shuffle_block == [7]
    _check_mixing(store)


def test_same_seed_and_epoch_same_batches_whatever_the_execution(ray_session, grouped):
    store = EcgStore(grouped["none"])
    from ray.data import DataContext, ExecutionResources

    a, _ = _epoch_batches(store, 1, 3, records_per_task=1000)
    context = DataContext.get_current()
    saved = context.execution_options.resource_limits
    context.execution_options.resource_limits = ExecutionResources(cpu=1)  # one read task at a time
    try:
        b, _ = _epoch_batches(store, 1, 3, records_per_task=1000)
    finally:
        context.execution_options.resource_limits = saved
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x["record_index"], y["record_index"])
        np.testing.assert_array_equal(x["signal"], y["signal"])
    c, _ = _epoch_batches(store, 1, 4)
    assert not np.array_equal(a[0]["record_index"], c[0]["record_index"])


def test_plan_depends_only_on_seed_and_epoch(grouped):
    store = EcgStore(grouped["none"])
    parts = [StorePart(store, select_records(store))]
    first = plan_epoch(parts, seed=5, epoch=2, shard_index=1, num_shards=3)
    again = plan_epoch(parts, seed=5, epoch=2, shard_index=1, num_shards=3)
    np.testing.assert_array_equal(first.indices, again.indices)
    assert len(first.indices) == 4000
    shards = [plan_epoch(parts, seed=5, epoch=2, shard_index=r, num_shards=3).indices for r in range(3)]
    assert len(np.unique(np.concatenate(shards))) == 12000


def test_block_shuffle_keeps_runs_whole_and_permutes_them():
    draws = [np.arange(0, 100), np.arange(1000, 1030)]
    part_ids, order = epoch_order(draws, seed=1, epoch=0, shuffle_block=10)
    assert sorted(order.tolist()) == sorted(np.concatenate(draws).tolist())
    runs = order.reshape(-1, 10)  # 13 runs of 10 consecutive records each
    assert (np.diff(runs, axis=1) == 1).all()
    assert not np.array_equal(runs[:, 0], np.sort(runs[:, 0])), "runs must be permuted"
    assert (part_ids[order >= 1000] == 1).all()


def test_task_bounds_cover_every_record_once_with_a_short_first_task():
    from ecg_ray.data.stream import task_bounds

    bounds = task_bounds(20000, 8192, short_first=True)
    assert bounds[0] == 0 and bounds[-1] == 20000 and bounds[1] == 1024
    assert np.diff(bounds).max() <= 8192 and (np.diff(bounds) > 0).all()
    assert task_bounds(20000, 8192).tolist() == [0, 6666, 13333, 20000]  # block shuffle: equal tasks
    assert task_bounds(100, 8192, short_first=True).tolist() == [0, 100]
