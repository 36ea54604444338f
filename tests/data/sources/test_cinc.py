"""CinC 2020/2021-format reader against the real 50-record sample (mixed sources)."""

import wfdb

from ecg_ray.data.prepare import prepare_store
from ecg_ray.data.sources.cinc import CincSource, dataset_of
from ecg_ray.data.store import EcgStore


def test_cinc_sample_in_one_store(cinc_dir, tmp_path):
    manifest = prepare_store([CincSource(cinc_dir)], tmp_path / "cinc", workers=1, progress=False)
    store = EcgStore(tmp_path / "cinc")
    assert manifest["records"] == 50 and not manifest["skipped"]
    assert manifest["per_dataset"] == {"georgia": 20, "ningbo": 20, "ptbxl": 10}
    labels = store.label_matrix()
    for i, row in store.records.iterrows():
        header = wfdb.rdheader(str(cinc_dir / row["id"]))
        dx = next(c for c in header.comments if c.startswith("Dx")).split(":")[1].strip().split(",")
        got = {name for name, v in zip(store.label_names, labels[i], strict=True) if v}
        assert got == set(dx), row["id"]
        assert row["length"] == header.sig_len * 100 // header.fs  # 500 Hz -> 100 Hz, whole record
    assert store.label_names == sorted(store.label_names, key=int)  # numeric SNOMED order


def test_dataset_prefixes():
    assert dataset_of("HR06001") == "ptbxl"
    assert dataset_of("E07500") == "georgia"
    assert dataset_of("JS00010") == "chapman-shaoxing"
    assert dataset_of("JS20010") == "ningbo"
    assert dataset_of("A0001") == "cpsc" and dataset_of("Q0001") == "cpsc-extra"
    assert dataset_of("I01") == "incart" and dataset_of("S0001") == "ptb"
    assert dataset_of("foo") == "unknown"
