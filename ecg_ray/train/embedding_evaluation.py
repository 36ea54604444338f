"""``ecg-ray evaluate --mode knn|logreg``: the cheap probes on cached embeddings, scored like every mode.

The records, folds and labels are the store's, chosen exactly as the other modes choose them
(:func:`ecg_ray.train.downstream.splits`: labelled records of the train / validation / test folds,
the label fraction); each record's feature is its row of an embeddings file (``ecg-ray embed``,
windows averaged). The probe is fitted on the training folds for every value of its grid
(``eval.knn_k``, ``eval.logreg_c``), the value with the best validation macro AUC is kept (first
on ties; the first when no validation label is scorable), and the test folds are scored by
:func:`ecg_ray.evaluation.scoring.score`: the same macro AUC on both scales, bootstrap intervals,
``min_test_positives`` and excluded labels as the linear probe. ``evaluation.json`` and
``test_predictions.npz`` go into the run directory, so ``compare`` and ``report`` read them.

Without ``eval.embeddings`` the store is embedded first into ``RUN_DIR/embeddings.parquet``
(the evaluation folds only, windows ``data.window`` / ``data.stride``) from ``eval.encoder``,
``eval.pretrained`` or a random-init ``model.encoder``. No Ray Train run: the probes run in the
driver (memory: see :mod:`ecg_ray.evaluation.embedding_probes`).

Records without an embedding because they were too short for one window are left out, as
evaluation leaves out records without a window; any other missing record is an error.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import numpy as np

from ecg_ray import storage
from ecg_ray.config import Config, to_dict
from ecg_ray.data.leads import lead_subset
from ecg_ray.data.signal import CANONICAL_LEADS
from ecg_ray.data.store import EcgStore
from ecg_ray.errors import ConfigError
from ecg_ray.evaluation import embedding_probes
from ecg_ray.run_layout import EVALUATION_FILE, RUN_CONFIG, new_run_dir

PROBE_MODES = ("knn", "logreg")
EMBEDDINGS_FILE = "embeddings.parquet"


def validate_probe(config: Config) -> EcgStore:
    """Checks of a knn/logreg evaluation that need no embeddings; returns the store."""
    from ecg_ray.train.preflight import preflight_evaluation

    e = config.eval
    if e.mode not in PROBE_MODES:
        raise ConfigError(f"eval.mode: {e.mode!r} is not an embedding probe ({', '.join(PROBE_MODES)})")
    if e.encoder and e.pretrained:
        raise ConfigError("eval.encoder and eval.pretrained are exclusive; give one")
    if e.embeddings and (e.encoder or e.pretrained):
        raise ConfigError("eval.embeddings names its encoder already; drop --encoder/--pretrained (or drop "
                          "--embeddings to embed the store with that encoder first)")
    if config.noise.types:
        raise ConfigError(f"noise.types: the noise evaluation runs the encoder on noisy windows; eval.mode={e.mode} "
                          "reads cached embeddings: drop noise.types")
    if config.data.stores:
        raise ConfigError("evaluation uses one labelled store (data.store); data.stores mixes stores for pretraining")
    if not config.data.store and e.embeddings:  # the store the embeddings were made from
        from ecg_ray.embedding.parquet import read_metadata

        config.data.store = read_metadata(e.embeddings)["store"]["path"]
    if not config.data.store:
        raise ConfigError("data.store: no store given (use --store STORE)")
    store = EcgStore(config.data.store)
    if config.data.label_set not in store.manifest.get("label_sets", {}):
        raise ConfigError(f"data.label_set: {config.data.label_set!r} not in store "
                          f"(has {sorted(store.manifest.get('label_sets', {}))})")
    preflight_evaluation(config, store)
    return store


def _embed_store(config: Config, store: EcgStore, run_dir: str) -> str:
    """Embed the evaluation folds of ``store`` into the run directory; returns the file."""
    from ecg_ray.embedding import embed_store, from_encoder_file, random_init
    from ecg_ray.train.checkpoint import run_encoder_source

    e, data = config.eval, config.data
    if e.encoder:
        source = from_encoder_file(e.encoder)
    elif e.pretrained:
        source = run_encoder_source(e.pretrained)
    else:
        source = random_init(config.model.encoder, store.fs, data.crop, seed=config.seed)
    folds = sorted({*data.train_folds, *data.val_folds, *data.test_folds})
    out = storage.join(run_dir, EMBEDDINGS_FILE)
    embed_store(source, store, out, folds=folds, window=data.window, stride=data.stride, leads=data.leads)
    return out


def _features(store: EcgStore, location: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(store indices, (n, dim) float32 per-record embeddings, file metadata) of an embeddings file.

    A per-window file is averaged per record here, as the per-record file is.
    """
    from ecg_ray.embedding.parquet import read_embeddings

    table, meta = read_embeddings(location)
    index = table.column("record_index").to_numpy()
    vectors = table.column("embedding").combine_chunks()
    x = vectors.values.to_numpy().reshape(len(index), vectors.type.list_size).astype(np.float32, copy=False)
    ids = table.column("record_id").to_pylist()
    if len(index) and (index.max() >= len(store) or store.take("id", index) != ids):
        raise ConfigError(f"{location}: its records are not those of {store.path} (made from "
                          f"{meta['store']['path']}); embed this store")
    if meta.get("pool") == "windows" and len(index):
        first = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        counts = np.diff(np.r_[first, len(index)])
        x = (np.add.reduceat(x.astype(np.float64), first, axis=0) / counts[:, None]).astype(np.float32)
        index = index[first]
    return index, x, meta


def _rows(name: str, wanted: np.ndarray, index: np.ndarray, short_ids: set[str], store: EcgStore,
          location: str) -> tuple[np.ndarray, np.ndarray]:
    """(records that have an embedding, their rows in the file); too-short records are dropped."""
    rows = np.searchsorted(index, wanted)
    found = (rows < len(index)) & (index[np.minimum(rows, len(index) - 1)] == wanted)
    missing = wanted[~found]
    if len(missing):
        ids = store.take("id", missing)
        unexplained = [i for i in ids if str(i) not in short_ids]
        if unexplained:
            raise ConfigError(f"{location} has no embedding for {len(unexplained)} {name} record(s) "
                              f"({', '.join(map(str, unexplained[:5]))}{' ...' if len(unexplained) > 5 else ''}); "
                              "embed the store's train, validation and test folds")
    if not found.any():
        raise ConfigError(f"no {name} record of {store.path} has an embedding in {location}")
    return wanted[found], rows[found]


def _probe(config: Config, train_x, train_y, val_x, test_x, scorer) -> tuple[list[dict], int, np.ndarray]:
    """(history over the grid, chosen grid position, test scores)."""
    e = config.eval
    history: list[dict[str, Any]] = []
    if e.mode == "knn":
        ks = [int(k) for k in e.knn_k]
        val = embedding_probes.knn_scores(train_x, train_y, val_x, ks, e.knn_temperature)
        for position, k in enumerate(ks):
            history.append({"epoch": position, "k": k, "k_used": min(k, len(train_x)),
                            "val_macro_auc": scorer(val[k])})
        best = _best(history)
        test = embedding_probes.knn_scores(train_x, train_y, test_x, [ks[best]], e.knn_temperature)[ks[best]]
        return history, best, test
    models = []
    for position, c in enumerate(e.logreg_c):
        model = embedding_probes.fit_logreg(train_x, train_y, float(c), e.logreg_max_iter)
        models.append(model)
        history.append({"epoch": position, "C": float(c),
                        "val_macro_auc": scorer(embedding_probes.logreg_scores(model, val_x))})
    best = _best(history)
    return history, best, embedding_probes.logreg_scores(models[best], test_x)


def _best(history: list[dict]) -> int:
    values = np.array([h["val_macro_auc"] for h in history], dtype=float)
    return 0 if np.isnan(values).all() else int(np.nanargmax(values))


def run_embedding_probe(config: Config, output: str | None, run_dir: str | None = None) -> dict[str, Any]:
    """One knn / logreg evaluation; writes RUN_DIR/evaluation.json and the test predictions; the summary."""
    import yaml

    from ecg_ray.evaluation.predictions import PREDICTIONS_FILE, Predictions, save_predictions
    from ecg_ray.evaluation.scoring import score, scored_test_fields
    from ecg_ray.methods.registry import method_display
    from ecg_ray.train.downstream import splits, variant_name

    store = validate_probe(config)
    train_idx, val_idx, test_idx = splits(config, store)
    if run_dir is None:
        if output is None:
            raise ConfigError("--output DIR is required")
        run_dir = new_run_dir(output, f"eval-{config.eval.mode}")
    start = time.perf_counter()
    storage.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), storage.join(run_dir, RUN_CONFIG))
    location = storage.normalize(config.eval.embeddings) if config.eval.embeddings else _embed_store(config, store,
                                                                                                  run_dir)
    index, x, meta = _features(store, location)
    leads = list(lead_subset(config.data.leads) or CANONICAL_LEADS)
    if list(meta.get("leads") or CANONICAL_LEADS) != leads:
        raise ConfigError(f"data.leads: {location} was embedded from leads {meta.get('leads')}, not {leads}; "
                          "embed with --leads (or drop data.leads)")
    short_ids = set(meta.get("too_short", {}).get("ids", []))
    label_set = config.data.label_set
    labels = store.label_matrix(label_set)
    parts = {name: _rows(name, wanted, index, short_ids, store, location)
             for name, wanted in (("training", train_idx), ("validation", val_idx), ("test", test_idx))}
    (train, train_rows), (val, val_rows), (test, test_rows) = parts.values()

    def val_auc(scores: np.ndarray) -> float:
        return float(score(store, val, scores, label_set)["macro_auc"])

    history, best, probs = _probe(config, x[train_rows], labels[train], x[val_rows], x[test_rows], val_auc)
    min_positives = config.eval.min_test_positives
    clean = score(store, test, probs, label_set, bootstrap=config.eval.bootstrap, seed=config.seed,
                  min_test_positives=min_positives)
    names = list(store.manifest["label_sets"][label_set])
    ids = np.asarray(store.take("id", test)).astype(str)
    save_predictions(storage.join(run_dir, PREDICTIONS_FILE),
                     Predictions(record_ids=ids, probs=probs, labels=labels[test].astype(np.uint8), label_names=names,
                                 label_set=label_set))
    selected = {key: value for key, value in history[best].items() if key in ("k", "k_used", "C")}
    encoder = meta.get("encoder", {})
    method = encoder.get("method")
    named = copy.deepcopy(config)  # an embeddings file from an encoder file names a pretrained variant
    if config.eval.embeddings and not config.eval.encoder:
        named.eval.encoder = encoder.get("location") or ""
    datasets = np.asarray(store.column("dataset"))[test].astype(str)
    evaluation = {
        "mode": config.eval.mode,
        "variant": variant_name(named),
        "encoder": encoder.get("encoder"),
        "pretrained": config.eval.pretrained or config.eval.encoder or encoder.get("location"),
        "method": method,
        "method_display": method_display(method),
        "store": str(config.data.store),
        "test_datasets": {str(k): int(v) for k, v in zip(*np.unique(datasets, return_counts=True), strict=True)},
        "train_folds": config.data.train_folds, "val_folds": config.data.val_folds,
        "test_folds": config.data.test_folds,
        "leads": leads, "window": meta.get("window"), "stride": meta.get("stride") if meta.get("window") else None,
        "label_set": label_set, "n_labels": len(names), "label_fraction": config.data.label_fraction,
        "seed": config.seed,
        **scored_test_fields(clean, min_positives),
        "test_records": int(len(test)), "predictions": PREDICTIONS_FILE, "robustness": [],
        "val_macro_auc": history[best]["val_macro_auc"], "best_epoch": best, "selected": selected,
        "history": history, "train_records": int(len(train)), "val_records": int(len(val)),
        "embeddings": {"path": location, "window": meta.get("window"), "stride": meta.get("stride"),
                       "pool": meta.get("pool"), "dim": meta.get("dim"), "fs": encoder.get("fs"),
                       "too_short": len(short_ids)},
        "probe": ({"k": [int(k) for k in config.eval.knn_k], "temperature": config.eval.knn_temperature}
                  if config.eval.mode == "knn" else
                  {"C": [float(c) for c in config.eval.logreg_c], "max_iter": config.eval.logreg_max_iter}),
        "run_dir": run_dir, "checkpoint": None,
    }
    storage.write_text(json.dumps(evaluation, indent=1), storage.join(run_dir, EVALUATION_FILE))
    return {
        "mode": evaluation["mode"], "variant": evaluation["variant"],
        "val_macro_auc": evaluation["val_macro_auc"], "test_macro_auc": evaluation["test_macro_auc"],
        "test_macro_auc_ci": evaluation["test_macro_auc_ci"],
        "test_macro_auc_reference": evaluation["test_macro_auc_reference"],
        "test_macro_auc_reference_ci": evaluation["test_macro_auc_reference_ci"],
        "min_test_positives": min_positives,
        "labels_excluded": [item["label"] for item in evaluation["labels_excluded"]],
        "labels_scored": evaluation["labels_scored"], "labels_skipped": evaluation["labels_skipped"],
        "best_epoch": best, "selected": selected, "epochs": len(history), "robustness": [],
        "embeddings": location, "run_dir": run_dir, "checkpoint": None,
        "wall_s": round(time.perf_counter() - start, 2),
    }
