"""Where the time goes, per crop, in our Ray Data crop stream, and what makes the Ray side faster.

Run:  .venv/bin/python bench/stream_breakdown.py [--records 20000] [--rounds 5] [--epochs 3]
      [--store PATH]   (reuse a tiled store built earlier instead of building one, ~6 s)
      [--stages cut,block,transfer,collate,e2e] [--only ref,recommended,...] (end-to-end variants)
Takes ~2-4 minutes on the 2-core machine (more when it is busy).

The store is the PTB-XL sample (``../shared/data/ptb-xl-sample``) tiled to ``--records`` records
with ``build_tiled_store`` from ``bench/data_pipeline.py``, codec ``none`` (raw chunk files).
Everything uses a *global shuffle*: each epoch a seeded permutation of all records is cut into
read tasks of ~4096 records, so a read task holds records from all over the store.

Stages (each prints ``RESULT stream_breakdown_<stage> us_per_crop=..``; medians of ``--rounds``
repetitions, variants interleaved inside each repetition because the 2-core machine is shared):

1. ``cut_*``: cutting a read task's 4096 crops from the raw chunk files in the driver: the
   committed ``_cut_from_raw_chunks`` (copied below as :func:`cut_head`) on random records (global
   shuffle) and on consecutive records (the old layout), the in-task row permutation, and the
   alternatives :func:`cut_mmap` (per-process cache of chunk memmaps, gathers time-major windows
   straight into the output in the permuted order: no sort, no separate permutation) and the
   working tree's ``ecg_ray.data.cutting.cut_raw_chunks`` (one ``preadv`` per crop) if present.
   ``read_task_in_worker_*``: a whole read task (starts, cut, permutation) of a global-shuffle
   epoch plan, timed inside a Ray worker (workers persist, so per-process caches stay warm).
2. ``block_*``: ``BlockAccessor.batch_to_block`` of the task's dict (Arrow tensor column).
3. ``transfer_*``: a ready block returned by an actor through the object store to the driver
   (minus a no-op actor call), and ``ray.put`` + ``ray.get`` in the driver.
4. ``collate_*``: consuming a materialized dataset of prebuilt blocks: ``iter_torch_batches(256)``
   on 4000-row blocks (today's tasks: ``linspace`` bounds) and on 4096-row blocks, ``iter_batches``
   (numpy) + ``torch.from_numpy``, and whole blocks (``batch_size=None``) split into 256-row tensors.
   ``ray_data_per_block`` (wall) and ``ray_data_per_block_driver_cpu``: what Ray Data costs per read
   task/block whatever its size (datasets of 5 and of 50 one-row read tasks), per crop of a
   4096-row block; ``epoch_fixed``: the rest of a dataset's cost, per crop of a ``--records`` epoch.
5. ``e2e_*``: whole epochs (dataset creation + iteration, torch batches of 256, ``drop_last``):
   today's ``ecg_ray.data.stream.train_crops`` + ``iter_torch_batches``; ``e2e_ref``, the global
   shuffle described for stream.py rebuilt here (``BenchDatasource``: sort by offset, ``cut_head``,
   permute rows, ``batch_to_block``, ``linspace`` bounds of ~4096-record tasks, one dataset per
   epoch); the alternatives, each differing from ``e2e_ref`` as its name says (``multi_epoch``: one
   dataset streams all epochs of a repetition; ``recommended_iter_torch_batches``: ``cut_mmap`` +
   tasks of 10240 records + one dataset for all epochs + ``preserve_order``; ``recommended``: the
   same with task sizes a multiple of 256 and whole blocks split into batches by the consumer;
   ``ray_core_tasks``: no Ray Data, plain Ray tasks, 3 in flight, read in order); and the baseline (one numpy memmap + torch
   ``DataLoader``, ``shuffle=True``, 2 workers, as in ``bench/data_pipeline.py``). Prints
   ``RESULT stream_breakdown_e2e_<variant> us_per_crop=.. crops_per_s=.. ratio=..`` (ratio to
   the baseline of the same run).

Nothing under ``ecg_ray/`` is changed: the alternatives live in this file. Ray workers import
this file as the module ``stream_breakdown`` (``PYTHONPATH`` is set before ``ray.init``), so its
per-process caches behave as module globals of ``ecg_ray`` would.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LEADS = 12
SIGNALS = "signals"
BATCH = 256

# ----------------------------------------------------------------------------- cutting


def random_crop_starts(lengths: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform crop starts in [0, length - crop] (as ecg_ray.data.stream.random_crop_starts)."""
    return np.floor(rng.random(len(lengths)) * (lengths - crop + 1)).astype(np.int64)


def cut_head(store_path: str, chunk: int, starts: np.ndarray, width: int) -> np.ndarray:
    """The committed ``_cut_from_raw_chunks`` (HEAD of ecg_ray/data/stream.py), copied verbatim."""
    out = np.empty((len(starts), LEADS, width), dtype=np.float32)
    chunk_of = starts // chunk
    maps: dict[int, np.ndarray] = {}

    def chunk_map(k: int) -> np.ndarray:
        if k not in maps:
            path = Path(store_path) / SIGNALS / "c" / str(k) / "0"
            maps[k] = (np.memmap(path, dtype="<f4", mode="r").reshape(-1, LEADS) if path.exists()
                       else np.zeros((chunk, LEADS), np.float32))
        return maps[k]

    inside = (starts % chunk) + width <= chunk
    for k in np.unique(chunk_of[inside]):
        sel = np.flatnonzero(inside & (chunk_of == k))
        windows = sliding_window_view(chunk_map(int(k)), width, axis=0)
        out[sel] = np.ascontiguousarray(windows[starts[sel] % chunk])
    for i in np.flatnonzero(~inside):
        k, local = int(chunk_of[i]), int(starts[i] % chunk)
        joined = np.concatenate([chunk_map(k)[local:], chunk_map(k + 1)[:width - (chunk - local)]])
        out[i] = joined.T
    return out


_MAPS: dict[tuple[str, int], np.ndarray] = {}  # per process: chunk memmaps stay mapped across tasks


def _chunk_map(maps: dict, store_path: str, chunk: int, k: int) -> np.ndarray:
    key = (store_path, k)
    m = maps.get(key)
    if m is None:
        path = os.path.join(store_path, SIGNALS, "c", str(k), "0")
        m = (np.memmap(path, dtype="<f4", mode="r").reshape(-1, LEADS) if os.path.exists(path)
             else np.zeros((chunk, LEADS), np.float32))
        maps[key] = m
    return m


def cut_mmap(store_path: str, chunk: int, starts: np.ndarray, width: int, cache: bool = True) -> np.ndarray:
    """Crops in the order of ``starts`` (any order), from cached memmaps of the chunk files.

    Per chunk one fancy index over a time-major window view (each crop is one contiguous
    ``width * 48`` byte run of the file) written straight to its output rows, transposed on the
    way: one pass over the bytes, no sort of the records, no separate row permutation.
    ``cache=False`` maps the chunk files anew on each call, as ``cut_head`` does.
    """
    maps = _MAPS if cache else {}
    n = len(starts)
    out = np.empty((n, LEADS, width), dtype=np.float32)
    chunk_of = starts // chunk
    local = starts - chunk_of * chunk
    inside = local + width <= chunk
    order = np.argsort(chunk_of, kind="stable")
    ks, first = np.unique(chunk_of[order], return_index=True)
    bounds = [*first.tolist(), n]
    for j, k in enumerate(ks.tolist()):
        rows = order[bounds[j]:bounds[j + 1]]
        rows = rows[inside[rows]]
        m = _chunk_map(maps, store_path, chunk, k)
        windows = as_strided(m, shape=(m.shape[0] - width + 1, width, LEADS),
                             strides=(m.strides[0], m.strides[0], m.strides[1]), writeable=False)
        out[rows] = windows[local[rows]].transpose(0, 2, 1)
    for i in np.flatnonzero(~inside).tolist():  # the rare crop that straddles two chunks
        k, at = int(chunk_of[i]), int(local[i])
        out[i] = np.concatenate([_chunk_map(maps, store_path, chunk, k)[at:],
                                 _chunk_map(maps, store_path, chunk, k + 1)[:width - (chunk - at)]]).T
    return out


def cut_preadv(store_path: str, chunk: int, starts: np.ndarray, width: int) -> np.ndarray:
    """The working tree's ``ecg_ray.data.cutting.cut_raw_chunks`` (one preadv per crop)."""
    from ecg_ray.data.cutting import cut_raw_chunks

    return cut_raw_chunks(store_path, chunk, starts, width)


def have_preadv() -> bool:
    try:
        from ecg_ray.data.cutting import cut_raw_chunks  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- datasource


@dataclass(frozen=True)
class Spec:
    """One variant of the stream: how read tasks are cut and shaped, and how they are consumed."""

    store: str
    chunk: int
    width: int = 250
    seed: int = 0
    epoch: int = 0
    records_per_task: int = 4096
    cut: str = "head"            # head: sort + cut_head + permute | mmap: cut_mmap | preadv
    bounds: str = "linspace"     # linspace: today's equal tasks | aligned: multiples of BATCH
    layout: str = "rows"         # rows: one crop per row | prebatched: one (BATCH, 12, W) batch per row
    block: str = "arrow"         # arrow | pandas
    consumer: str = "torch"      # torch: iter_torch_batches | numpy: iter_batches + from_numpy
    #                              blocks: iter_batches(batch_size=None) + split | tasks: Ray core
    preserve_order: bool = False
    prefetch: int = 1
    target_max_block_size: int | None = None
    tiny: bool = False           # 1-row tasks: measures the fixed cost of an epoch
    epochs_per_dataset: int = 1  # > 1: one dataset (one executor start) streams several epochs


def task_bounds(n: int, spec: Spec) -> list[tuple[int, int]]:
    if spec.bounds == "aligned":
        step = max(BATCH, spec.records_per_task // BATCH * BATCH)
        edges = [*range(0, n, step), n]
    else:
        edges = np.linspace(0, n, max(1, math.ceil(n / spec.records_per_task)) + 1).astype(int).tolist()
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi > lo]


def epoch_plan(offsets: np.ndarray, lengths: np.ndarray, spec: Spec):
    """Global shuffle: per epoch a seeded permutation of all records cut into read tasks.

    Entries are (epoch, task, record indices, offsets, lengths). A dataset spanning several epochs
    (``epochs_per_dataset`` > 1) drops each epoch's last ``n % BATCH`` records (what ``drop_last``
    drops anyway), so that epochs end on a batch boundary of the one iterator.
    """
    plan = []
    for epoch in range(spec.epoch, spec.epoch + spec.epochs_per_dataset):
        order = np.random.default_rng([spec.seed, epoch]).permutation(len(offsets))
        if spec.epochs_per_dataset > 1:
            order = order[:len(order) // BATCH * BATCH]
        plan += [(epoch, t, order[lo:hi].copy(), offsets[order[lo:hi]], lengths[order[lo:hi]])
                 for t, (lo, hi) in enumerate(task_bounds(len(order), spec))]
    return plan


def read_batch(spec: Spec, epoch: int, task: int, indices: np.ndarray, offsets: np.ndarray,
               lengths: np.ndarray) -> dict:
    """One read task's numpy batch: rows in a seeded random order, one crop per record."""
    rng = np.random.default_rng([spec.seed, epoch, 3, task])
    if spec.tiny:
        indices, offsets, lengths = indices[:1], offsets[:1], lengths[:1]
    starts = offsets + random_crop_starts(lengths, spec.width, rng)
    if spec.cut == "head":  # records sorted by offset for reading, rows permuted afterwards
        by_offset = np.argsort(offsets, kind="stable")
        signal = cut_head(spec.store, spec.chunk, starts[by_offset], spec.width)
        perm = rng.permutation(len(starts))
        signal, record_index = signal[perm], indices[by_offset][perm]
    else:  # rows permuted first, crops cut straight into that order
        perm = rng.permutation(len(starts))
        cutter = cut_mmap if spec.cut == "mmap" else cut_preadv
        signal, record_index = cutter(spec.store, spec.chunk, starts[perm], spec.width), indices[perm]
    record_index = record_index.astype(np.int64)
    if spec.layout == "prebatched" and not spec.tiny:
        keep = len(signal) // BATCH * BATCH  # only the last (short) task of an epoch drops rows
        signal = signal[:keep].reshape(-1, BATCH, LEADS, spec.width)
        record_index = record_index[:keep].reshape(-1, BATCH)
    return {"signal": signal, "record_index": record_index}


def timed_read_batch(spec: Spec, *args) -> tuple[float, int]:
    """``read_batch`` timed where it runs (a Ray worker): (seconds, rows)."""
    t0 = time.perf_counter()
    batch = read_batch(spec, *args)
    return time.perf_counter() - t0, len(batch["signal"])


def read_block(spec: Spec, epoch: int, task: int, indices, offsets, lengths):
    from ray.data.block import BlockAccessor, BlockType

    kind = BlockType.PANDAS if spec.block == "pandas" else BlockType.ARROW
    return BlockAccessor.batch_to_block(read_batch(spec, epoch, task, indices, offsets, lengths), kind)


def _make_datasource_class():
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class BenchDatasource(Datasource):
        """Minimal copy of our EcgDatasource (crops mode, global shuffle) with the knobs of Spec."""

        def __init__(self, spec: Spec, offsets: np.ndarray, lengths: np.ndarray):
            super().__init__()
            self.spec, self.offsets, self.lengths = spec, offsets, lengths

        def estimate_inmemory_data_size(self) -> int:
            return len(self.offsets) * LEADS * self.spec.width * 4

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for args in epoch_plan(self.offsets, self.lengths, self.spec):
                rows = 1 if self.spec.tiny else len(args[2])
                if self.spec.layout == "prebatched":
                    rows = max(1, rows // BATCH)
                meta = BlockMetadata(num_rows=rows, size_bytes=len(args[2]) * (LEADS * self.spec.width * 4 + 8),
                                     input_files=None, exec_stats=None)
                tasks.append(ReadTask(lambda spec=self.spec, a=args: [read_block(spec, *a)], meta))
            return tasks

    return BenchDatasource


_DS_CLASS = None


def bench_dataset(spec: Spec, offsets: np.ndarray, lengths: np.ndarray):
    import ray
    from ray.data import DataContext

    global _DS_CLASS
    if _DS_CLASS is None:
        _DS_CLASS = _make_datasource_class()
    ctx = DataContext.get_current()
    saved = ctx.target_max_block_size
    if spec.target_max_block_size is not None:
        ctx.target_max_block_size = spec.target_max_block_size
    try:
        source = _DS_CLASS(spec, offsets, lengths)
        n_tasks = len(task_bounds(len(offsets), spec))
        dataset = ray.data.read_datasource(source, override_num_blocks=n_tasks)
    finally:
        ctx.target_max_block_size = saved
    dataset.context.execution_options.preserve_order = spec.preserve_order
    if spec.target_max_block_size is not None:
        dataset.context.target_max_block_size = spec.target_max_block_size
    return dataset


# ----------------------------------------------------------------------------- consumers


def consume(dataset, spec: Spec) -> int:
    """Iterate one epoch as (BATCH, 12, W) float32 torch tensors (drop_last); returns crops seen."""
    import torch

    n = 0
    if spec.consumer == "torch":
        for x in dataset.iter_torch_batches(batch_size=BATCH, drop_last=True, prefetch_batches=spec.prefetch):
            n += x["signal"].shape[0]
    elif spec.consumer == "numpy":
        for x in dataset.iter_batches(batch_size=BATCH, batch_format="numpy", drop_last=True,
                                      prefetch_batches=spec.prefetch):
            n += torch.from_numpy(x["signal"]).shape[0]
    elif spec.consumer == "blocks":  # whole blocks, split here (blocks hold multiples of BATCH rows)
        for x in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=spec.prefetch):
            signal = torch.from_numpy(x["signal"])
            if signal.dim() == 3:
                signal = signal[:len(signal) // BATCH * BATCH].split(BATCH)
            for b in signal:  # a prebatched block iterates its batches along the first axis
                n += b.shape[0]
    else:
        raise ValueError(spec.consumer)
    return n


def ray_core_epoch(spec: Spec, offsets: np.ndarray, lengths: np.ndarray, remote_read, window: int = 3) -> int:
    """No Ray Data: plain tasks returning numpy dicts, at most ``window`` in flight, read in order."""
    import ray
    import torch

    plan = epoch_plan(offsets, lengths, spec)
    refs, n, nxt = [], 0, 0
    while nxt < len(plan) or refs:
        while nxt < len(plan) and len(refs) < window:
            refs.append(remote_read.remote(spec, *plan[nxt]))
            nxt += 1
        signal = torch.from_numpy(ray.get(refs.pop(0))["signal"])
        for b in signal[:len(signal) // BATCH * BATCH].split(BATCH):
            n += b.shape[0]
    return n


# ----------------------------------------------------------------------------- measurement helpers


def median_us(samples: list[float], crops: int) -> float:
    return statistics.median(samples) / crops * 1e6


def fmt(samples: list[float], crops: int) -> str:
    return " ".join(f"{s / crops * 1e6:.2f}" for s in samples)


def report(stage: str, samples: list[float], crops: int, note: str = "") -> float:
    us = median_us(samples, crops)
    print(f"  {stage:<34} {us:8.2f} us/crop   (reps: {fmt(samples, crops)}){'  ' + note if note else ''}")
    print(f"RESULT stream_breakdown_{stage} us_per_crop={us:.3f}")
    return us


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


# ----------------------------------------------------------------------------- stages


def stage_cut(store: str, chunk: int, offsets, lengths, rounds: int, width: int) -> dict:
    print("\n1. read + cut (driver, one task of 4096 records)")
    n = 4096
    rng = np.random.default_rng(1)
    variants = ["cut_head_random", "cut_head_consecutive", "cut_permute_rows", "cut_mmap_random_fused_perm",
                "cut_mmap_fresh_maps_random_fused_perm", "cut_mmap_consecutive"]
    if have_preadv():
        variants.append("cut_preadv_random")
    res: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds + 1):  # round 0: warm-up (page cache, memmap cache), not counted
        rand = np.sort(rng.permutation(len(offsets))[:n])
        lo = int(rng.integers(0, len(offsets) - n))
        cons = np.arange(lo, lo + n)
        s_rand = offsets[rand] + random_crop_starts(lengths[rand], width, rng)
        s_cons = offsets[cons] + random_crop_starts(lengths[cons], width, rng)
        perm = rng.permutation(n)
        t = {}
        t["cut_head_random"], crops = timed(cut_head, store, chunk, s_rand, width)
        t["cut_head_consecutive"], _ = timed(cut_head, store, chunk, s_cons, width)
        t["cut_permute_rows"], permuted = timed(np.take, crops, perm, 0)
        t["cut_mmap_random_fused_perm"], fused = timed(cut_mmap, store, chunk, s_rand[perm], width)
        t["cut_mmap_fresh_maps_random_fused_perm"], _ = timed(cut_mmap, store, chunk, s_rand[perm], width, False)
        t["cut_mmap_consecutive"], _ = timed(cut_mmap, store, chunk, s_cons, width)
        if "cut_preadv_random" in res:
            t["cut_preadv_random"], pre = timed(cut_preadv, store, chunk, s_rand[perm], width)
            assert np.array_equal(pre, permuted)
        assert np.array_equal(fused, permuted)
        if r:
            for k, v in t.items():
                res[k].append(v)
    out = {k: report(k, v, n) for k, v in res.items()}

    # The whole read task (crop starts, cut, permutation) timed inside a Ray worker, one task at a
    # time, on the tasks of a global-shuffle epoch plan; workers persist, as they do across epochs.
    import ray

    remote = ray.remote(num_cpus=1)(timed_read_batch)
    cuts = ["head", "mmap"] + (["preadv"] if have_preadv() else [])
    plan = epoch_plan(offsets, lengths, Spec(store=store, chunk=chunk, width=width))
    worker: dict[str, list[float]] = {c: [] for c in cuts}
    rows = 0
    for r in range(rounds + 1):
        for c in cuts:
            spec = Spec(store=store, chunk=chunk, width=width, cut=c)
            for task in plan[:2]:
                dt, rows = ray.get(remote.remote(spec, r, *task[1:]))
                if r:
                    worker[c].append(dt)
    for c, v in worker.items():
        out[f"read_task_in_worker_{c}"] = report(f"read_task_in_worker_{c}", v, rows)
    return out


def stage_block(rounds: int, width: int) -> tuple[dict, object]:
    from ray.data.block import BlockAccessor, BlockType

    print("\n2. block building (batch_to_block of a 4096-row task)")
    n = 4096
    batch = {"signal": np.random.default_rng(0).standard_normal((n, LEADS, width), dtype=np.float32),
             "record_index": np.arange(n, dtype=np.int64)}
    pre = {"signal": batch["signal"].reshape(-1, BATCH, LEADS, width),
           "record_index": batch["record_index"].reshape(-1, BATCH)}
    res: dict[str, list[float]] = {"block_arrow_rows": [], "block_arrow_prebatched": [], "block_pandas_rows": []}
    block = None
    for r in range(rounds + 1):
        t = {}
        t["block_arrow_rows"], block = timed(BlockAccessor.batch_to_block, batch)
        t["block_arrow_prebatched"], _ = timed(BlockAccessor.batch_to_block, pre)
        t["block_pandas_rows"], _ = timed(BlockAccessor.batch_to_block, batch, BlockType.PANDAS)
        if r:
            for k, v in t.items():
                res[k].append(v)
    out = {k: report(k, v, n) for k, v in res.items()}
    return out, block


class _Holder:
    """Actor holding one ready block; ``get`` returns it (a put into the object store each call)."""

    def __init__(self, block):
        self.block = block

    def get(self):
        return self.block

    def noop(self):
        return None


def stage_transfer(block, rounds: int, calls: int = 10) -> dict:
    import ray

    print("\n3. Ray transfer of a ready 4096-row Arrow block (object store -> driver)")
    n = block.num_rows
    holder = ray.remote(num_cpus=0)(_Holder).remote(block)
    ray.get(holder.noop.remote())
    res: dict[str, list[float]] = {"transfer_actor_get_minus_noop": [], "transfer_put_get_driver": []}
    for r in range(rounds + 1):
        t0 = time.perf_counter()
        for _ in range(calls):
            got = ray.get(holder.get.remote())
            assert got.num_rows == n
            del got
        t_get = (time.perf_counter() - t0) / calls
        t0 = time.perf_counter()
        for _ in range(calls):
            ray.get(holder.noop.remote())
        t_noop = (time.perf_counter() - t0) / calls
        t0 = time.perf_counter()
        for _ in range(calls):
            got = ray.get(ray.put(block))
            del got
        t_put = (time.perf_counter() - t0) / calls
        if r:
            res["transfer_actor_get_minus_noop"].append(t_get - t_noop)
            res["transfer_put_get_driver"].append(t_put)
    ray.kill(holder)
    return {k: report(k, v, n) for k, v in res.items()}


def stage_collate(rounds: int, width: int, records: int, offsets, lengths, base: Spec) -> dict:
    import pyarrow as pa
    import ray
    from ray.data.block import BlockAccessor

    print("\n4. collation into torch over a materialized dataset of prebuilt blocks (5 blocks)")
    rng = np.random.default_rng(0)

    def blocks(rows: int, prebatched: bool = False) -> list[pa.Table]:
        out = []
        for _ in range(5):
            sig = rng.standard_normal((rows, LEADS, width), dtype=np.float32)
            idx = np.arange(rows, dtype=np.int64)
            if prebatched:
                sig, idx = sig.reshape(-1, BATCH, LEADS, width), idx.reshape(-1, BATCH)
            out.append(BlockAccessor.batch_to_block({"signal": sig, "record_index": idx}))
        return out

    # (rows per block, prebatched, consumer); 5 blocks each. One dataset at a time is materialized
    # (all of them together would exceed the 1 GB object store and spill), iterated once to warm it,
    # then timed.
    variants = {
        "collate_torch_4000row_blocks": (4000, False, "torch"),
        "collate_torch_4096row_blocks": (4096, False, "torch"),
        "collate_numpy_from_numpy_4000": (4000, False, "numpy"),
        "collate_blocks_split_4096": (4096, False, "blocks"),
        "collate_blocks_prebatched_4096": (4096, True, "blocks"),
    }
    res: dict[str, list[float]] = {k: [] for k in variants}
    fixed: dict[str, list[float]] = {"epoch_fixed": [], "ray_data_per_block": [], "ray_data_per_block_driver_cpu": []}
    tiny = replace(base, tiny=True)
    tiny10 = replace(tiny, epochs_per_dataset=10)

    def tiny_run(spec: Spec) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        list(bench_dataset(spec, offsets, lengths).iter_batches(batch_size=None))
        return time.perf_counter() - t0, time.process_time() - c0

    for _ in range(rounds):
        for name, (rows, prebatched, consumer) in variants.items():
            ds = ray.data.from_arrow(blocks(rows, prebatched)).materialize()
            spec = replace(base, consumer=consumer)
            consume(ds, spec)
            dt, _ = timed(consume, ds, spec)
            res[name].append(dt)
            del ds
        tiny_run(tiny)
        (w5, _), (w50, c50) = tiny_run(tiny), tiny_run(tiny10)  # 5 and 50 one-row read tasks
        per_block = (w50 - w5) / 45
        fixed["ray_data_per_block"].append(per_block)
        fixed["ray_data_per_block_driver_cpu"].append(c50 / 50)
        fixed["epoch_fixed"].append(max(0.0, w5 - 5 * per_block))
    out = {k: report(k, res[k], 5 * rows) for k, (rows, _, _) in variants.items()}
    # Ray Data's own cost: per read task / block (whatever its rows), and per dataset (epoch).
    for name in ("ray_data_per_block", "ray_data_per_block_driver_cpu"):
        out[name] = report(name, fixed[name], 4096,
                           f"= {statistics.median(fixed[name]) * 1e3:.1f} ms per block, per crop of a 4096-row block")
    out["epoch_fixed"] = report("epoch_fixed", fixed["epoch_fixed"], records,
                                f"= {statistics.median(fixed['epoch_fixed']) * 1e3:.0f} ms per dataset "
                                f"besides its blocks, per crop of a {records}-record epoch")
    return out


def make_baseline(store_path: Path, workers: int, crop: int, tmp: Path):
    """The baseline of bench/data_pipeline.py: one .npy memmap + DataLoader(shuffle=True, 2 workers)."""
    from data_pipeline import reference_loader  # bench/ is on sys.path when a bench script runs

    loader = reference_loader(store_path, BATCH, workers, crop, tmp)

    def epochs(_first: int, n_epochs: int) -> int:
        return sum(x.shape[0] for _ in range(n_epochs) for x in loader)

    return epochs


def e2e_variants(store: str, chunk: int, width: int) -> dict[str, Spec]:
    """Today's global shuffle rebuilt here (``ref``), one change at a time, and combinations."""
    ref = Spec(store=store, chunk=chunk, width=width)
    # cut_mmap + tasks of 10240 records + one dataset for all epochs + preserve_order (deterministic)
    rec = replace(ref, cut="mmap", records_per_task=10240, epochs_per_dataset=2, preserve_order=True)
    v = {
        "ref": ref,
        "preserve_order": replace(ref, preserve_order=True),
        "cut_mmap": replace(ref, cut="mmap"),
        "numpy_consumer": replace(ref, consumer="numpy"),
        "aligned_blocks_consumer": replace(ref, bounds="aligned", consumer="blocks"),
        "prebatched_rows": replace(ref, bounds="aligned", layout="prebatched", consumer="blocks"),
        "pandas_blocks": replace(ref, block="pandas"),
        "prefetch_4": replace(ref, prefetch=4),
        "target_block_8MB": replace(ref, target_max_block_size=8 * 1024 * 1024),
        "tasks_2048": replace(ref, records_per_task=2048),
        "tasks_10240": replace(ref, records_per_task=10240),
        "multi_epoch_dataset": replace(ref, epochs_per_dataset=2),
        "cut_mmap_tasks_10240": replace(ref, cut="mmap", records_per_task=10240),
        "cut_mmap_multi_epoch": replace(ref, cut="mmap", epochs_per_dataset=2),
        "recommended_iter_torch_batches": rec,
        "recommended_iter_torch_batches_no_preserve_order": replace(rec, preserve_order=False),
        # + tasks of a multiple of 256 rows, consumed as whole blocks split into batches
        "recommended": replace(rec, bounds="aligned", consumer="blocks"),
        "ray_core_tasks_cut_mmap": replace(ref, cut="mmap", bounds="aligned", consumer="tasks"),
    }
    if have_preadv():
        v["cut_preadv"] = replace(ref, cut="preadv")
    return v


def stage_e2e(store_path: Path, chunk: int, offsets, lengths, rounds: int, epochs: int, width: int,
              tmp: Path, only: set[str] | None) -> dict:
    import ray

    print(f"\n5. end to end: {epochs} epochs per repetition, {rounds} repetitions, interleaved")
    store = str(store_path)
    variants = e2e_variants(store, chunk, width)
    if only:
        variants = {k: v for k, v in variants.items() if k in only}
    remote_read = ray.remote(num_cpus=1)(read_batch)

    def run_variant(spec: Spec, first: int, n_epochs: int) -> int:
        """Crops delivered over epochs first .. first + n_epochs - 1."""
        if spec.epochs_per_dataset > 1:  # one dataset for all of them
            spec = replace(spec, epoch=first, epochs_per_dataset=n_epochs)
            return consume(bench_dataset(spec, offsets, lengths), spec)
        n = 0
        for e in range(first, first + n_epochs):
            s = replace(spec, epoch=e)
            n += (ray_core_epoch(s, offsets, lengths, remote_read) if s.consumer == "tasks"
                  else consume(bench_dataset(s, offsets, lengths), s))
        return n

    def today(first: int, n_epochs: int) -> int:
        from ecg_ray.data.stream import train_crops

        n = 0
        for e in range(first, first + n_epochs):
            dataset, _ = train_crops(store_path, crop=width, seed=0, epoch=e)
            n += sum(x["signal"].shape[0] for x in dataset.iter_torch_batches(batch_size=BATCH, drop_last=True))
        return n

    runners = {"today_train_crops": today}
    runners.update({name: (lambda e, k, s=spec: run_variant(s, e, k)) for name, spec in variants.items()})
    runners["baseline_dataloader"] = make_baseline(store_path, os.cpu_count() or 2, width, tmp)
    expected = len(offsets) // BATCH * BATCH
    for name, fn in runners.items():  # warm-up: page cache, worker start, per-process caches
        got = fn(0, 2)
        if got != 2 * expected:
            print(f"  note: {name} delivered {got / 2:.0f} crops per epoch (drop_last gives {expected})")
    rates: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(rounds):
        names = list(runners)
        names = names[r % len(names):] + names[:r % len(names)]  # rotate the order each round
        for name in names:
            t0 = time.perf_counter()
            n = runners[name](2 + r * epochs, epochs)
            rates[name].append(n / (time.perf_counter() - t0))
    base = statistics.median(rates["baseline_dataloader"])
    ref = statistics.median(rates["ref"]) if "ref" in rates else float("nan")
    out = {}
    for name, rs in rates.items():
        med = statistics.median(rs)
        out[name] = med
        print(f"  e2e_{name:<48} {med:9,.0f} crops/s  {1e6 / med:6.2f} us/crop  ratio {med / base:.3f}  "
              f"vs ref {med / ref:.2f}   (reps: {' '.join(f'{x:,.0f}' for x in rs)})")
        print(f"RESULT stream_breakdown_e2e_{name} us_per_crop={1e6 / med:.3f} crops_per_s={med:.0f} "
              f"ratio={med / base:.3f}")
    summary = " ".join(f"{k}={out[k] / base:.3f}" for k in ("today_train_crops", "ref", "recommended") if k in out)
    print(f"RESULT stream_breakdown ratio_to_baseline {summary}")
    return out


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--crop", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=5, help="repetitions per measurement (median reported)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per end-to-end repetition")
    parser.add_argument("--store", type=Path, default=None, help="an existing tiled store (skips building one)")
    parser.add_argument("--stages", default="cut,block,transfer,collate,e2e")
    parser.add_argument("--only", default="", help="comma-separated end-to-end variants to run (default all)")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from data_pipeline import PTBXL, build_tiled_store

    from ecg_ray.data.store import EcgStore

    stages = set(args.stages.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="ecg_breakdown_"))
    import ray

    try:
        store_path = args.store
        if store_path is None:
            if not (PTBXL / "ptbxl_database.csv").exists():
                print(f"SKIP: PTB-XL sample not found at {PTBXL}")
                return 0
            from ecg_ray.data.prepare import prepare_store
            from ecg_ray.data.sources.ptbxl import PtbxlSource

            t0 = time.perf_counter()
            prepare_store([PtbxlSource(PTBXL)], tmp / "base", workers=2, progress=False)
            store_path = build_tiled_store(tmp / "base", tmp / "tiled", args.records, "none")
            print(f"store: {args.records} records (codec none) built in {time.perf_counter() - t0:.1f} s")
        st = EcgStore(store_path)
        offsets = st.records["offset"].to_numpy().astype(np.int64)
        lengths = st.records["length"].to_numpy().astype(np.int64)
        import json

        meta = json.loads((Path(store_path) / SIGNALS / "zarr.json").read_text())
        chunk = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        assert [c["name"] for c in meta["codecs"]] == ["bytes"], "needs a codec-none store"
        print(f"store {store_path}: {len(offsets)} records, chunk {chunk} samples, "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
        warnings.filterwarnings("ignore", message=".*not writable.*")

        # Ray workers import this file as ``stream_breakdown`` (see the end of the file).
        os.environ["PYTHONPATH"] = os.pathsep.join([str(BENCH), str(ROOT), os.environ.get("PYTHONPATH", "")])
        ray.init(num_cpus=os.cpu_count() or 2, object_store_memory=1_000_000_000, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
        from ray.data import DataContext

        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no "execution finished" line per epoch
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        base = Spec(store=str(store_path), chunk=chunk, width=args.crop)

        if "cut" in stages:
            stage_cut(str(store_path), chunk, offsets, lengths, args.rounds, args.crop)
        block = None
        if "block" in stages or "transfer" in stages:
            _, block = stage_block(args.rounds, args.crop)
        if "transfer" in stages:
            stage_transfer(block, args.rounds)
        del block
        if "collate" in stages:
            stage_collate(args.rounds, args.crop, len(offsets), offsets, lengths, base)
        if "e2e" in stages:
            only = {x for x in args.only.split(",") if x} or None
            stage_e2e(Path(store_path), chunk, offsets, lengths, args.rounds, args.epochs, args.crop, tmp, only)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    # Run as the module ``stream_breakdown`` so Ray pickles these functions by reference and its
    # workers import this file once per process (module globals such as _MAPS persist per process).
    import stream_breakdown

    sys.exit(stream_breakdown.main())
