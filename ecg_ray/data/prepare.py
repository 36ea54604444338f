"""``ecg-ray prepare``: read sources in a process pool, apply exclusions, write one store.

Records are read in parallel (reading and resampling dominate) but written in the sources'
stable order, so the same inputs always give the same store. A bad record is skipped and
listed with its file and reason (``on_error="skip"``) or stops the run (``"fail"``).
A label text a reader could not map (``Record.unmapped_labels``) never drops a record: it is
kept as a label name, logged as a warning (once per text) and counted in the manifest's
``label_warnings``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ecg_ray import storage
from ecg_ray.data.reader_threads import limit_threads
from ecg_ray.data.sources.base import Record, SkippedRecord, Source
from ecg_ray.data.store import DEFAULT_CHUNK_SAMPLES, DEFAULT_CODEC
from ecg_ray.data.store_writer import StoreWriter
from ecg_ray.errors import EcgRayError, RecordError, SourceError
from ecg_ray.overwrite import check_store_target, store_inputs

logger = logging.getLogger(__name__)


@dataclass
class Exclusions:
    """Records kept out of a corpus; every exclusion is counted by reason in the manifest.

    ``ptbxl_db`` + ``ptbxl_folds`` removes every record of a patient who has a PTB-XL record in
    those folds, in any source (PTB-XL itself, or the PTB-XL part of CinC via ``HR<ecg_id>``),
    so e.g. pretraining on CinC never sees a PTB-XL test patient.
    """

    datasets: set[str] = field(default_factory=set)
    folds: set[int] = field(default_factory=set)
    patients: set[str] = field(default_factory=set)
    ptbxl_db: Path | None = None
    ptbxl_folds: set[int] = field(default_factory=set)

    def __post_init__(self):
        self._ecg_to_patient: dict[int, str] = {}
        self._held_out_patients: set[str] = set()
        if self.ptbxl_folds and self.ptbxl_db is None:
            raise SourceError("--exclude-ptbxl-folds needs --ptbxl-db (the ptbxl_database.csv to map patients)")
        if self.ptbxl_db is not None:
            try:
                db = pd.read_csv(self.ptbxl_db, usecols=["ecg_id", "patient_id", "strat_fold"])
            except Exception as exc:
                raise SourceError(f"{self.ptbxl_db}: unreadable PTB-XL database ({exc})") from None
            patients = db["patient_id"].astype(float).astype(int).astype(str)
            self._ecg_to_patient = dict(zip(db["ecg_id"].astype(int), patients, strict=True))
            self._held_out_patients = set(patients[db["strat_fold"].isin(self.ptbxl_folds)])

    def reason(self, record: Record) -> str | None:
        """Why a record is excluded, or None to keep it."""
        if record.dataset in self.datasets:
            return f"dataset={record.dataset}"
        fold = record.metadata.get("fold")
        if fold is not None and int(fold) in self.folds:
            return f"fold={int(fold)}"
        patient = str(record.metadata.get("patient_id", record.id))
        if patient in self.patients:
            return "patient listed"
        if self._held_out_patients:
            folds = ",".join(map(str, sorted(self.ptbxl_folds)))
            ecg_id = record.metadata.get("ptbxl_ecg_id", -1)
            if record.dataset == "ptbxl" and ecg_id in (-1, None) and record.id.isdigit():
                ecg_id = int(record.id)  # PTB-XL's own records: id is the ecg_id
            mapped = self._ecg_to_patient.get(int(ecg_id)) if ecg_id not in (-1, None) else None
            if mapped in self._held_out_patients:
                return f"ptbxl patient in folds {folds}"
        return None

    def describe(self) -> dict:
        return {"datasets": sorted(self.datasets), "folds": sorted(self.folds),
                "patients": len(self.patients), "ptbxl_db": str(self.ptbxl_db) if self.ptbxl_db else None,
                "ptbxl_folds": sorted(self.ptbxl_folds)}


def read_one(job: tuple[Source, object]) -> Record | SkippedRecord:
    """One record, or why it is skipped: the same call in a pool process and in a Ray task."""
    source, ref = job
    try:
        return source.read(ref)
    except RecordError as exc:
        return SkippedRecord(exc.record_id, exc.file, exc.reason)
    except Exception as exc:  # a reader bug or an exotic file: still named, never silent
        record_id, file = source.ref_id(ref)
        return SkippedRecord(record_id, file, f"unexpected {type(exc).__name__}: {exc}")


def _jobs(sources: list[Source]) -> Iterator[tuple[Source, object]]:
    for source in sources:
        for ref in source.refs():
            yield source, ref


def prepare_store(
    sources: list[Source],
    out: str | Path,
    *,
    fs: float = 100.0,
    on_error: str = "skip",
    exclusions: Exclusions | None = None,
    chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
    codec: str = DEFAULT_CODEC,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    inputs: list[str | Path] | None = None,
) -> dict:
    """Read all sources into a new store at ``out``; returns its manifest.

    ``overwrite`` replaces only a complete ecg_ray store that holds no input: neither a source path
    (from the sources' ``describe()``), nor the PTB-XL database of ``exclusions``, nor ``inputs``
    (other files the caller read, e.g. a patient list). That is checked before anything is read.
    The Ray path across a cluster is ``ecg_ray.data.parallel_prepare.prepare_on_ray`` (same
    arguments but ``workers``), which writes a bit-identical store.
    """
    exclusions = exclusions or Exclusions()
    all_inputs = check_prepare_request(sources, out, fs=fs, on_error=on_error, exclusions=exclusions,
                                       overwrite=overwrite, inputs=inputs)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    total = sum(len(s.refs()) for s in sources)
    source_of_kind = {id(s): s for s in sources}
    writer = StoreWriter(out, fs=fs, chunk_samples=chunk_samples, codec=codec, overwrite=overwrite,
                         progress=progress, inputs=tuple(all_inputs))
    pool = None
    try:
        if workers > 1:
            # fork is cheap and sources are plain objects; spawn would re-import torch in workers.
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
            # One BLAS/OpenMP thread per reader process, as Ray gives its tasks: otherwise each of the
            # `workers` processes runs one thread per core and they fight over the cores (bench/RESULTS.md).
            pool = ctx.Pool(workers, initializer=limit_threads, initargs=(1,))
            results = pool.imap(read_one, _jobs(sources), chunksize=8)
        else:
            results = map(read_one, _jobs(sources))
        source_by_record = _source_iter(sources)
        first_unmapped: dict[str, tuple[str, str, str]] = {}
        bar = tqdm(total=total, desc=f"prepare {storage.name(out)}", unit="rec", disable=not progress, mininterval=0.5,
                   dynamic_ncols=True)
        with bar:
            for result in results:
                source = next(source_by_record)
                bar.update(1)
                if isinstance(result, SkippedRecord):
                    if on_error == "fail":
                        raise RecordError(result.id, result.file, result.reason)
                    writer.skip(result)
                    continue
                reason = exclusions.reason(result)
                if reason is not None:
                    writer.exclude(reason)
                    continue
                writer.add(result, source.extra_label_columns(result))
                for text in result.unmapped_labels:  # the first record with each text, logged below
                    first_unmapped.setdefault(text, (result.id, result.file, source.kind))
                bar.set_postfix(skipped=len(writer.skipped), excluded=sum(writer.excluded.values()), refresh=False)
        log_unmapped(first_unmapped, writer.label_warnings())
        manifest = finalize_store(writer, list(source_of_kind.values()), exclusions, on_error)
    except BaseException:
        writer.abort()
        raise
    finally:
        if pool is not None:
            pool.terminate()
    return manifest


def check_prepare_request(sources: list[Source], out: str | Path, *, fs: float, on_error: str,
                          exclusions: Exclusions, overwrite: bool, inputs: list[str | Path] | None) -> list[str]:
    """Everything refused before a record is read (both paths); returns every input path."""
    all_inputs = store_inputs(sources, exclusions.ptbxl_db, *(inputs or []))
    check_store_target(out, inputs=all_inputs, overwrite=overwrite)
    if on_error not in ("skip", "fail"):
        raise EcgRayError(f"--on-error must be 'skip' or 'fail', got {on_error!r}")
    if not sources:
        raise SourceError("no sources given")
    for source in sources:
        if source.fs_out != fs:
            raise SourceError(f"source {source.kind} resamples to {source.fs_out} Hz, store is {fs} Hz")
    return all_inputs


def finalize_store(writer: StoreWriter, sources: list[Source], exclusions: Exclusions, on_error: str,
                   known_checksums: dict[str, str] | None = None) -> dict:
    """Tables and manifest for the records ``writer`` holds, then the store moved into place (both paths)."""
    label_names, label_sets = _labels_of(sources)
    return writer.finalize(
        sources=[{**s.describe(), "records_listed": len(s.refs())} for s in sources],
        label_names=label_names, label_sets=label_sets,
        extra={"exclusions": exclusions.describe(), "on_error": on_error},
        known_checksums=known_checksums,
    )


def log_unmapped(first: dict[str, tuple[str, str, str]], warnings: dict) -> None:
    """Warn once per label text kept verbatim (after the progress bar), then a summary."""
    if not warnings["records"]:
        return
    for text, (record_id, file, kind) in list(first.items())[:20]:
        logger.warning("%s (%s): %s label %r is not a code or abbreviation the reader knows; kept verbatim "
                       "as a label name (counted in the manifest's label_warnings)", record_id, file, kind, text)
    texts = [f"{k!r} x{v}" for k, v in warnings["unmapped"].items()]
    logger.warning("%d record(s) carry %d label text(s) kept verbatim as label names: %s%s",
                   warnings["records"], len(texts), ", ".join(texts[:20]), " ..." if len(texts) > 20 else "")


def _source_iter(sources: list[Source]) -> Iterator[Source]:
    for source in sources:
        for _ in source.refs():
            yield source


def _labels_of(sources: list[Source]) -> tuple[list[str] | None, dict[str, list[str]]]:
    """Label names and views: a source's own ordered set when there is exactly one such source."""
    if len(sources) == 1:
        return sources[0].label_names(), sources[0].label_sets()
    return None, {}
