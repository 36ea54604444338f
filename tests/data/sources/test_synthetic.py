"""SyntheticSource: lead physics, balanced classes, determinism, plausible and learnable signals."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.data.sources.base import stable_fold
from ecg_ray.data.sources.synthetic import DEFAULT_CLASSES, SUPPORTED_CLASSES, SyntheticSource
from ecg_ray.errors import ConfigError, RecordError

LEAD = {name: k for k, name in enumerate(CANONICAL_LEADS)}


@pytest.fixture(scope="module")
def sixty():
    """60 records of the 6 default classes (10 each), read once for several tests."""
    source = SyntheticSource(n_records=60, seed=0)
    return source, [source.read(ref) for ref in source.refs()]


def _limb_relation_errors(x: np.ndarray) -> dict[str, float]:
    i, ii = x[:, LEAD["I"]].astype(np.float64), x[:, LEAD["II"]].astype(np.float64)
    expected = {"III": ii - i, "aVR": -(i + ii) / 2, "aVL": i - ii / 2, "aVF": ii - i / 2}
    return {name: float(np.abs(x[:, LEAD[name]] - value).max()) for name, value in expected.items()}


def test_limb_lead_relations_hold_after_resampling(sixty):
    _, records = sixty
    for record in records:
        errors = _limb_relation_errors(record.signal)
        assert max(errors.values()) < 1e-4, (record.id, record.labels, errors)


def test_limb_lead_relations_exact_without_resampling():
    # At the generation rate nothing is resampled: only the float32 cast separates the leads.
    source = SyntheticSource(n_records=7, fs_out=500.0, classes=list(SUPPORTED_CLASSES))
    for ref in source.refs():
        x = source.read(ref).signal
        assert max(_limb_relation_errors(x).values()) < 1e-5


def test_record_shape_dtype_ids_and_metadata(sixty):
    source, records = sixty
    assert source.kind == "synthetic"
    assert source.refs() == list(range(60))
    record = records[7]
    assert record.signal.shape == (1000, 12)
    assert record.signal.dtype == np.float32
    assert record.fs == 100.0 and record.fs_original == 500.0
    assert record.id == "syn000007"
    assert record.dataset == "synthetic"
    assert record.file == "synthetic://seed0/7"
    assert source.ref_id(7) == (record.id, record.file)
    meta = record.metadata
    assert meta["fold"] == stable_fold("syn000007") and 1 <= meta["fold"] <= 10
    assert meta["patient_id"] == "syn000007"
    assert isinstance(meta["age"], int) and 18 <= meta["age"] <= 95
    assert meta["sex"] in (0, 1)
    assert isinstance(meta["heart_rate"], float) and 30 < meta["heart_rate"] < 200


def test_other_rates_and_durations():
    record = SyntheticSource(n_records=2, fs_out=250.0, duration_s=2.5).read(1)
    assert record.signal.shape == (625, 12)


def test_default_classes_balanced_and_shuffled(sixty):
    source, records = sixty
    assert source.label_names() == list(DEFAULT_CLASSES)
    assert len(DEFAULT_CLASSES) == 6
    assert all(len(r.labels) == 1 for r in records)
    counts = Counter(r.labels[0] for r in records)
    assert counts == dict.fromkeys(DEFAULT_CLASSES, 10)
    # The seeded shuffle means the classes do not simply cycle along the record index.
    assert [r.labels[0] for r in records] != [DEFAULT_CLASSES[i % 6] for i in range(60)]


def test_chosen_subset_balanced_in_given_order():
    classes = ["STE", "NORM", "AFIB", "LVH"]
    source = SyntheticSource(n_records=61, classes=classes, seed=3)
    assert source.label_names() == classes
    counts = Counter(source.class_of(i) for i in source.refs())
    assert set(counts) == set(classes)
    assert max(counts.values()) - min(counts.values()) <= 1
    # class_of is what read() labels the record with
    assert source.read(10).labels == [source.class_of(10)]


def test_label_sets_split_rhythm_and_morphology():
    sets = SyntheticSource(n_records=6).label_sets()
    assert sets == {"rhythm": ["NORM", "SBRAD", "STACH", "AFIB"], "morphology": ["LBBB", "STE"]}


def test_deterministic_per_seed_and_index():
    a = SyntheticSource(n_records=20, seed=5)
    b = SyntheticSource(n_records=20, seed=5)
    later = a.read(13)
    a.read(2)  # reading order and other records do not matter
    assert np.array_equal(later.signal, b.read(13).signal)
    assert later.metadata == b.read(13).metadata
    # A pickled copy (as sent to reader processes) reads the same record.
    assert np.array_equal(pickle.loads(pickle.dumps(a)).read(13).signal, later.signal)
    other = SyntheticSource(n_records=20, seed=6).read(13)
    assert not np.allclose(other.signal, later.signal)
    assert not np.allclose(a.read(12).signal, later.signal)


def test_amplitudes_plausible(sixty):
    _, records = sixty
    for record in records:
        x = record.signal
        assert np.isfinite(x).all()
        peak_ii = float(np.abs(x[:, LEAD["II"]]).max())
        assert 0.3 < peak_ii < 5.0, (record.id, record.labels, peak_ii)
        assert np.abs(x).max() < 8.0


def test_heart_rate_orders_sbrad_norm_stach():
    source = SyntheticSource(n_records=60, classes=["SBRAD", "NORM", "STACH"], seed=1)
    rates: dict[str, list[float]] = {c: [] for c in source.classes}
    for ref in source.refs():
        record = source.read(ref)
        rates[record.labels[0]].append(record.metadata["heart_rate"])
    mean = {c: np.mean(v) for c, v in rates.items()}
    assert mean["SBRAD"] < 60 < mean["NORM"] < 100 < mean["STACH"]
    assert max(rates["SBRAD"]) < 60 and min(rates["STACH"]) > 100


def _rr_irregularity(x: np.ndarray, fs: float) -> float:
    """Mean |successive RR difference| / mean RR, from R peaks of lead II."""
    ii = x[:, LEAD["II"]].astype(np.float64)
    ii = ii - uniform_filter1d(ii, int(0.15 * fs))  # keep the sharp QRS, drop T waves and wander
    peaks, _ = find_peaks(ii, height=0.5 * ii.max(), distance=int(0.25 * fs))
    rr = np.diff(peaks) / fs
    return float(np.mean(np.abs(np.diff(rr))) / np.mean(rr))


def test_rr_irregularity_separates_afib_from_norm():
    source = SyntheticSource(n_records=60, classes=["NORM", "AFIB"], seed=2)
    irregularity: dict[str, list[float]] = {"NORM": [], "AFIB": []}
    for ref in source.refs():
        record = source.read(ref)
        irregularity[record.labels[0]].append(_rr_irregularity(record.signal, record.fs))
    assert max(irregularity["NORM"]) < 0.09 < min(irregularity["AFIB"])


def test_bad_reference_is_a_record_error():
    source = SyntheticSource(n_records=3)
    with pytest.raises(RecordError, match="no synthetic record"):
        source.read(3)
    with pytest.raises(RecordError):
        source.read("x")


@pytest.mark.parametrize("kwargs", [{"classes": ["NORM", "MI"]}, {"classes": []}, {"classes": ["NORM", "NORM"]},
                                    {"n_records": 0}, {"seed": -1}, {"duration_s": 0.0}, {"fs_generate": 20.0}])
def test_bad_configuration_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        SyntheticSource(**kwargs)
