"""The fields a method asks the stream for: ``patient_index`` and ``crop_start`` at scale.

12k records in 13 read tasks (and a two-store mixture): every crop's patient code groups exactly the
records of one patient, never two stores' patients, and ``crop_start`` is where the crop begins
in its record (each record's lead 1 holds its sample numbers, so the crop shows its own start).
"""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.data.sources.base import Record
from ecg_ray.data.store import EcgStore
from ecg_ray.data.store_writer import StoreWriter
from ecg_ray.data.stream import StorePart, patient_codes, train_crops

N = 12_000
PER_PATIENT = 3


def _store(out, n: int, *, missing_every: int = 0):
    """``n`` records of 60 samples; record i belongs to patient p{i // 3} (none where i % missing_every == 1)."""
    writer = StoreWriter(out, fs=100.0)
    for i in range(n):
        signal = np.zeros((60, 12), dtype=np.float32)
        signal[:, 0] = i
        signal[:, 1] = np.arange(60)
        metadata = {"fold": 1 + i % 10}
        if not (missing_every and i % missing_every == 1):
            metadata["patient_id"] = f"p{i // PER_PATIENT}"
        writer.add(Record(id=f"r{i:06d}", dataset="fields", file=f"f/{i}", signal=signal, fs=100.0,
                          fs_original=100.0, labels=["A"], metadata=metadata))
    writer.finalize(sources=[{"kind": "test"}], label_names=None)
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("fields")
    return _store(root / "a", N), _store(root / "b", 3000, missing_every=50)


def _rows(dataset) -> dict[str, np.ndarray]:
    batches = list(dataset.iter_batches(batch_size=4096, batch_format="numpy"))
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_patient_index_and_crop_start_over_many_read_tasks(ray_session, stores):
    dataset, info = train_crops(stores[0], crop=40, seed=3, records_per_task=1000, crops_per_record=2,
                                fields=("patient_index", "crop_start"))
    assert info.read_tasks >= 12  # (a short first task, then full ones)
    rows = _rows(dataset)
    assert len(rows["record_index"]) == 2 * N
    record, patient, start = rows["record_index"], rows["patient_index"], rows["crop_start"]
    # One code per patient, and a different one for every other patient.
    expected_group = record // PER_PATIENT
    pairs = set(zip(expected_group.tolist(), patient.tolist(), strict=True))
    assert len(pairs) == len(set(expected_group.tolist())) == len(set(patient.tolist())) == N // PER_PATIENT
    # The crop begins at crop_start of its own record.
    np.testing.assert_array_equal(rows["signal"][:, 0, 0], record)
    np.testing.assert_array_equal(rows["signal"][:, 1, 0], start)
    assert start.min() >= 0 and start.max() <= 60 - 40 and len(np.unique(start)) == 21


def test_fields_are_absent_unless_asked(ray_session, stores):
    dataset, _ = train_crops(stores[0], crop=40, records_per_task=4000)
    assert set(_rows(dataset)) == {"signal", "record_index", "store_index"}


def test_patient_codes_of_a_mixture_never_collide(stores):
    a, b = EcgStore(stores[0]), EcgStore(stores[1])
    parts = [StorePart(a, np.arange(N)), StorePart(b, np.arange(3000))]
    part_ids = np.concatenate([np.zeros(N, np.int64), np.ones(3000, np.int64)])
    indices = np.concatenate([np.arange(N), np.arange(3000)])
    codes = patient_codes(parts, part_ids, indices)
    # Both stores name patients p0, p1, ...: the codes must still differ between the stores.
    assert not set(codes[:N].tolist()) & set(codes[N:].tolist())
    # Store b: a record without a patient id is a patient of its own; the others group by three.
    b_codes = codes[N:]
    lonely = np.arange(3000) % 50 == 1
    assert len(set(b_codes[lonely].tolist())) == lonely.sum()
    assert not set(b_codes[lonely].tolist()) & set(b_codes[~lonely].tolist())
    grouped = {}
    for i in np.flatnonzero(~lonely):
        grouped.setdefault(i // PER_PATIENT, set()).add(int(b_codes[i]))
    assert all(len(c) == 1 for c in grouped.values())
    # The same partition with the whole table loaded (store.records): plain strings, not categories.
    assert len(b.records) == 3000
    again = patient_codes(parts, part_ids, indices)[N:]
    assert len(set(zip(again.tolist(), b_codes.tolist(), strict=True))) == len(set(b_codes.tolist()))
