"""Several stores as one corpus: weighted shares per epoch, mixed batches, compatibility checks, inspect."""

from __future__ import annotations

import numpy as np
import pytest

from ecg_ray.data.corpus import check_compatible
from ecg_ray.data.sampling import StorePart, epoch_draw, store_targets
from ecg_ray.data.store import EcgStore
from ecg_ray.data.stream import train_crops
from ecg_ray.errors import ConfigError
from tests.cli import run_json
from tests.data.synthetic_stores import grouped_store


@pytest.fixture(scope="module")
def two_stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    big = grouped_store(root / "big", {"BIG": 400}, dataset="big")
    small = grouped_store(root / "small", {"SMALL": 100}, dataset="small")
    return EcgStore(big), EcgStore(small)


def test_targets_split_the_epoch_by_weight():
    assert store_targets([400, 100], [1, 1]).tolist() == [250, 250]
    assert store_targets([400, 100], [4, 1]).tolist() == [400, 100]
    assert store_targets([400, 100], [1, 4]).tolist() == [100, 400]
    assert store_targets([7, 5, 3], [1, 1, 1]).sum() == 15


def test_resampled_store_repeats_every_record_before_any_twice(two_stores):
    big, small = two_stores
    draws = epoch_draw([StorePart(big, np.arange(400)), StorePart(small, np.arange(100))], seed=0, epoch=0)
    assert len(draws[0]) == 250 and len(np.unique(draws[0])) == 250  # subsampled, no repeats
    counts = np.bincount(draws[1], minlength=100)
    assert len(draws[1]) == 250 and set(counts.tolist()) == {2, 3}  # 2 full copies + 50 drawn once more
    other = epoch_draw([StorePart(big, np.arange(400)), StorePart(small, np.arange(100))], seed=0, epoch=1)
    assert not np.array_equal(draws[0], other[0]), "the subsample changes every epoch"


@pytest.mark.parametrize("weights,expected", [((1, 1), 0.5), ((4, 1), 0.8)])
def test_stream_shares_follow_weights_and_batches_mix(ray_session, two_stores, weights, expected):
    big, small = two_stores
    for epoch in range(2):
        parts = [StorePart(big, np.arange(400), weight=weights[0]), StorePart(small, np.arange(100), weight=weights[1])]
        ds, info = train_crops(parts, crop=50, seed=1, epoch=epoch, records_per_task=128)
        assert info.per_store == {str(big.path): round(500 * expected), str(small.path): round(500 * (1 - expected))}
        batches = [b["store_index"].numpy() for b in ds.iter_torch_batches(batch_size=64)]
        share = np.mean(np.concatenate(batches) == 0)
        assert abs(share - expected) <= 0.05, share
        for b in batches[:-1]:
            assert 0 < np.mean(b == 0) < 1, "every batch holds records of both stores"
        assert info.read_tasks >= 3


def test_stores_at_different_rates_or_leads_are_refused_naming_both(two_stores, tmp_path):
    big, _ = two_stores
    slow = EcgStore(grouped_store(tmp_path / "fifty", {"X": 10}, fs=50.0))
    with pytest.raises(ConfigError, match=r"sampling rate: .*big is at 100 Hz, .*fifty at 50 Hz"):
        check_compatible([big, slow])
    with pytest.raises(ConfigError, match="more than once"):
        check_compatible([big, big])


def test_pretrain_refuses_mixed_rates_before_ray_starts(two_stores, tmp_path, capsys):
    from ecg_ray.cli import main

    big, _ = two_stores
    slow = grouped_store(tmp_path / "fifty", {"X": 10}, fs=50.0)
    code = main(["pretrain", "--method", "simclr", "--store", str(big.path), "--store", str(slow),
                 "--output", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "sampling rate" in err and "fifty" in err and "big" in err
    assert not (tmp_path / "runs").exists()


def test_inspect_several_stores_prints_the_combined_corpus(two_stores, capsys):
    big, small = two_stores
    summary = run_json(capsys, "inspect", big.path, small.path)
    assert summary["records"] == 500 and summary["per_dataset"] == {"big": 400, "small": 100}
    assert summary["compatible"] and len(summary["stores"]) == 2
    assert summary["hours"] == pytest.approx(500 * 60 / 100 / 3600, abs=0.01)


def _config(tmp_path, text: str, overrides=()):
    from ecg_ray.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(path, list(overrides))


def test_a_store_left_without_records_fails_before_ray_naming_it(two_stores, tmp_path):
    from ecg_ray.train.trainer import validate_pretraining

    big, small = two_stores  # 60-sample records
    longer = grouped_store(tmp_path / "longer", {"L": 50}, length=300, dataset="longer")
    config = _config(tmp_path, f"data:\n  crop: 250\n  stores:\n    - {{path: {longer}}}\n    - {{path: {big.path}}}\n")
    with pytest.raises(ConfigError, match=r"big: no training records \(all 400 selected record\(s\) are shorter"):
        validate_pretraining(config)


def test_validation_uses_the_first_stores_own_datasets(two_stores, tmp_path):
    from ecg_ray.train.pretrain import validation_records

    big, small = two_stores
    config = _config(tmp_path, f"data:\n  crop: 50\n  val_folds: [10]\n  datasets: [small]\n  stores:\n"
                               f"    - {{path: {big.path}, datasets: [big]}}\n    - {{path: {small.path}}}\n")
    val = validation_records(config, big)  # the global datasets (small) would not exist in the first store
    assert len(val) == 40 and set(big.records["fold"].to_numpy()[val]) == {10}


def test_one_store_flag_wins_over_a_configs_mixture(two_stores, tmp_path):
    from ecg_ray.cli import build_parser, pretrain_config

    big, small = two_stores
    path = tmp_path / "mixed.yaml"
    path.write_text(f"data:\n  stores:\n    - {{path: {big.path}}}\n    - {{path: {small.path}}}\n")
    args = build_parser().parse_args(["pretrain", "--config", str(path), "--store", str(small.path)])
    config = pretrain_config(args)
    assert config.data.store == str(small.path) and config.data.stores is None
    args = build_parser().parse_args(["pretrain", "--config", str(path), "--store", str(big.path), "--store",
                                      str(small.path), "--store-weights", "4,1"])
    config = pretrain_config(args)
    assert config.data.store is None and [s.weight for s in config.data.stores] == [4.0, 1.0]
