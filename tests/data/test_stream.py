"""Ray Data streams: crop shapes, windows per record, determinism, filters, label fraction."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import (
    eval_windows,
    select_records,
    shard,
    stratified_subset,
    train_crops,
    window_starts,
)
from ecg_ray.errors import ConfigError


def _collect(dataset, batch_size=64):
    batches = list(dataset.iter_batches(batch_size=batch_size, batch_format="numpy"))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}, batches


def test_crops_shape_and_content(ray_session, ptbxl_store):
    store = EcgStore(ptbxl_store)
    dataset, info = train_crops(store, select_records(store, folds=range(1, 9)), seed=3, with_labels=True)
    rows, batches = _collect(dataset)
    assert batches[0]["signal"].shape == (64, 12, 250) and batches[0]["signal"].dtype == np.float32
    assert info.records == 353 and len(rows["record_index"]) == 353
    assert sorted(rows["record_index"]) == sorted(select_records(store, folds=range(1, 9)))
    assert rows["labels"].shape == (353, 71)
    # every crop is a real 250-sample slice of its record, labels are its record's labels
    labels = store.label_matrix()
    for k in range(0, 353, 50):
        record = store.signal(int(rows["record_index"][k]))
        crop = rows["signal"][k]
        starts = [s for s in range(0, 751) if np.array_equal(record[s:s + 250].T, crop)]
        assert starts, "crop not found in its record"
        np.testing.assert_array_equal(rows["labels"][k], labels[rows["record_index"][k]])


def test_same_seed_same_crops_other_epoch_other_crops(ray_session, ptbxl_store):
    def crops(seed, epoch):
        rows, _ = _collect(train_crops(ptbxl_store, seed=seed, epoch=epoch, records_per_task=128)[0])
        order = np.argsort(rows["record_index"])
        return rows["signal"][order]

    a, b = crops(7, 0), crops(7, 0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, crops(7, 1))
    assert not np.array_equal(a, crops(8, 0))


def test_seven_windows_per_10s_record(ray_session, ptbxl_store):
    store = EcgStore(ptbxl_store)
    test = select_records(store, folds=[10])
    dataset, info = eval_windows(store, test, window=250, stride=125)
    rows, _ = _collect(dataset)
    assert info.rows == 66 * 7 == len(rows["record_index"])
    _, counts = np.unique(rows["record_index"], return_counts=True)
    assert (counts == 7).all()
    first = rows["record_index"] == test[0]
    np.testing.assert_array_equal(rows["window_index"][first], np.arange(7))
    record = store.signal(int(test[0]))
    np.testing.assert_array_equal(rows["signal"][first][3], record[375:625].T)


def test_window_starts():
    assert window_starts(1000, 250, 125).tolist() == [0, 125, 250, 375, 500, 625, 750]
    assert window_starts(200, 250, 125).size == 0


def test_short_records_reported_not_silently_dropped(ray_session, ptbxl_store, caplog):
    store = EcgStore(ptbxl_store)
    with pytest.raises(ConfigError, match="no records of at least 1001"):
        train_crops(store, np.arange(5), crop=1001)
    # a mix: only records long enough stream, the rest are listed
    from ecg_ray.data import stream

    lengths = store.records["length"].to_numpy().copy()
    store.records.loc[[1, 3], "length"] = 100  # pretend two records are short (index only)
    try:
        with caplog.at_level("WARNING"):
            _, info = stream.train_crops(store, np.arange(6))
        assert info.too_short == ["2", "4"] and info.records == 4
        assert "shorter than 250" in caplog.text
    finally:
        store.records["length"] = lengths


def test_label_fraction_keeps_fraction_and_rare_labels(ptbxl_store):
    store = EcgStore(ptbxl_store)
    train = select_records(store, folds=range(1, 9))
    labels = store.label_matrix()[train]
    present = labels.sum(0) > 0
    for fraction in (0.05, 0.1, 0.5):
        subset = select_records(store, folds=range(1, 9), label_fraction=fraction, seed=1)
        assert len(subset) == round(fraction * len(train))
        assert set(subset) <= set(train)
        covered = store.label_matrix()[subset].sum(0) > 0
        # every label with positives keeps one where the budget allows (not at 5 %: 18 records)
        if present.sum() <= len(subset):
            assert covered[present].all(), fraction
    small = select_records(store, folds=range(1, 9), label_fraction=0.05, seed=1)
    assert (store.label_matrix()[small].sum(0) > 0).sum() >= min(len(small), present.sum()) * 0.9
    np.testing.assert_array_equal(small, select_records(store, folds=range(1, 9), label_fraction=0.05, seed=1))


def test_stratified_subset_rejects_bad_fraction():
    with pytest.raises(ConfigError, match="label_fraction"):
        stratified_subset(np.zeros((10, 2)), 0.0, 0)


def test_shards_equal_and_disjoint():
    parts = [shard(np.arange(103), i, 4) for i in range(4)]
    assert {len(p) for p in parts} == {25}
    assert len(np.unique(np.concatenate(parts))) == 100


def test_sharded_crops_cover_disjoint_records(ray_session, ptbxl_store):
    seen = []
    for rank in range(2):
        rows, _ = _collect(train_crops(ptbxl_store, seed=0, epoch=0, shard_index=rank, num_shards=2)[0])
        seen.append(set(rows["record_index"]))
    assert len(seen[0]) == len(seen[1]) == 250 and not seen[0] & seen[1]


def test_dataset_filter(ptbxl_store):
    store = EcgStore(ptbxl_store)
    assert len(select_records(store, datasets=["ptbxl"])) == 500
    with pytest.raises(ConfigError, match="not in store"):
        select_records(store, datasets=["cinc"])


def test_raw_chunk_fast_path_equals_zarr_path(ray_session, ptbxl_dir, tmp_path):
    """Uncompressed stores are cut from the raw chunk files; results equal the zarr read path,
    including crops that straddle chunk boundaries (chunks of 777 samples)."""
    from ecg_ray.data.cutting import raw_chunk_layout
    from ecg_ray.data.prepare import prepare_store
    from ecg_ray.data.sources.ptbxl import PtbxlSource

    crops = {}
    for codec in ("none", "lz4"):
        out = tmp_path / codec
        prepare_store([PtbxlSource(ptbxl_dir)], out, workers=2, progress=False, codec=codec, chunk_samples=777)
        assert (raw_chunk_layout(str(out)) is not None) == (codec == "none")
        rows, _ = _collect(train_crops(out, seed=5, epoch=2, crops_per_record=3)[0])
        order = np.lexsort((rows["signal"][:, 0, 0], rows["record_index"]))
        crops[codec] = rows["signal"][order]
    assert crops["none"].shape == (1500, 12, 250)
    np.testing.assert_array_equal(crops["none"], crops["lz4"])
