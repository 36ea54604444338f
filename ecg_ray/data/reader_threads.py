"""One BLAS/OpenMP thread per reader process: the process pool's initializer for ``prepare``.

A forked pool worker inherits numpy's and scipy's OpenBLAS with one thread per core, so N
readers on N cores run N x N threads and fight over the cores (3-4x slower on the synthetic
reader, bench/RESULTS.md "One BLAS thread per pool process"). Ray limits its tasks itself.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys

# Environment variables read by BLAS/OpenMP libraries when they load (libraries loaded after the limit).
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                     "NUMEXPR_NUM_THREADS")
# Shared libraries that keep a thread pool, by file name (numpy and scipy each bundle a prefixed OpenBLAS).
_THREADED_LIBRARY = re.compile(r"(openblas|libgomp|libiomp|libomp|mkl_rt)[^/]*\.(so|dylib)", re.IGNORECASE)
# (setter, getter) pairs of those libraries; the 64_ names are the ILP64 builds numpy ships.
_THREAD_CALLS = (("openblas_set_num_threads", "openblas_get_num_threads"),
                 ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                 ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                 ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                 ("MKL_Set_Num_Threads", "MKL_Get_Max_Threads"),
                 ("omp_set_num_threads", "omp_get_max_threads"))


def limit_threads(threads: int = 1) -> None:
    """Cap this process's BLAS/OpenMP thread pools at ``threads`` (the pool's worker initializer).

    Environment variables alone cannot do it in a forked worker: numpy's and scipy's OpenBLAS
    read them once, when the parent imported them. So the pools already loaded are resized
    through their own ``*_set_num_threads`` calls (what threadpoolctl does, without the
    dependency); the variables cover libraries loaded later in this process; torch, when
    imported, is limited too. Loaded libraries are found in ``/proc/self/maps`` (Linux); elsewhere
    only the variables and torch apply.
    """
    for variable in _THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    for library in _threaded_libraries():
        for setter, _ in _THREAD_CALLS:
            function = getattr(library, setter, None)
            if function is not None:
                function(ctypes.c_int(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def thread_counts() -> dict[str, int]:
    """Thread-pool size of each loaded BLAS/OpenMP library, by file name (what ``limit_threads`` set)."""
    counts = {}
    for library in _threaded_libraries():
        for _, getter in _THREAD_CALLS:
            function = getattr(library, getter, None)
            if function is not None:
                counts[f"{os.path.basename(library._name)}:{getter}"] = int(function())
    return counts


def _threaded_libraries() -> list[ctypes.CDLL]:
    """Handles to the BLAS/OpenMP libraries this process has loaded (RTLD_NOLOAD: never loads one)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if _THREADED_LIBRARY.search(line)})
    except OSError:
        return []
    libraries = []
    for path in paths:
        try:
            libraries.append(ctypes.CDLL(path, mode=os.RTLD_NOLOAD | ctypes.RTLD_LOCAL))
        except OSError:  # unmapped since, or not a library dlopen accepts
            continue
    return libraries
