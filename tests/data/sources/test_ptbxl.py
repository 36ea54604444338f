"""PTB-XL reader against the real 500-record sample."""

import numpy as np
import wfdb

from ecg_ray.data.signal import CANONICAL_LEADS, canonical_lead_name
from ecg_ray.data.sources.ptbxl import PtbxlSource
from ecg_ray.data.store import EcgStore

FOLD_COUNTS = {1: 58, 2: 51, 3: 34, 4: 42, 5: 47, 6: 33, 7: 44, 8: 44, 9: 81, 10: 66}


def test_store_counts_labels_and_folds(ptbxl_store):
    store = EcgStore(ptbxl_store)
    assert len(store) == 500
    assert len(store.label_names) == 71
    assert store.label_matrix().shape == (500, 71)
    assert {int(k): v for k, v in store.manifest["per_fold"].items()} == FOLD_COUNTS
    sets = store.manifest["label_sets"]
    assert {k: len(v) for k, v in sets.items()} == {"all": 71, "diagnostic": 44, "form": 19, "rhythm": 12,
                                                    "subclass": 23, "superclass": 5}


def test_label_order_follows_scp_statements(ptbxl_dir, ptbxl_store):
    import pandas as pd

    order = [str(s) for s in pd.read_csv(ptbxl_dir / "scp_statements.csv", index_col=0).index]
    assert EcgStore(ptbxl_store).label_names == order


def test_record_1_equals_wfdb_in_canonical_order(ptbxl_dir, ptbxl_store):
    signal, fields = wfdb.rdsamp(str(ptbxl_dir / "records100/00000/00001_lr"))
    names = [canonical_lead_name(n) for n in fields["sig_name"]]
    expected = signal[:, [names.index(lead) for lead in CANONICAL_LEADS]]
    store = EcgStore(ptbxl_store)
    assert store.records.iloc[0]["id"] == "1"
    np.testing.assert_allclose(store.signal(0), expected, rtol=0, atol=1e-6)
    labels = dict(zip(store.label_names, store.label_matrix()[0], strict=True))
    assert {k for k, v in labels.items() if v} == {"NORM", "LVOLT", "SR"}


def test_500hz_resampled_agrees_with_100hz_release(ptbxl_dir):
    hi, lo = PtbxlSource(ptbxl_dir, rate=500), PtbxlSource(ptbxl_dir, rate=100)
    for ecg_id in range(1, 51):
        x, y = hi.read(ecg_id).signal, lo.read(ecg_id).signal
        assert x.shape == y.shape == (1000, 12)
        # PTB-XL's own downsampling filter differs at the record edges; compare the interior.
        x, y = x[10:-10], y[10:-10]
        corr = np.corrcoef(x.ravel(), y.ravel())[0, 1]
        rel_rms = np.sqrt(np.mean((x - y) ** 2)) / np.sqrt(np.mean(y ** 2))
        assert corr > 0.985 and rel_rms < 0.2, (ecg_id, corr, rel_rms)


def test_metadata_kept(ptbxl_store):
    records = EcgStore(ptbxl_store).records
    for column in ("patient_id", "age", "sex", "fold", "offset", "length", "dataset", "file"):
        assert column in records
    assert records.loc[0, "patient_id"] == "15709" and records.loc[0, "fold"] == 3
    assert (records["length"] == 1000).all()
