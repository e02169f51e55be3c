"""One process-pool helper for the suite's embarrassingly parallel stages (parsing EHRs, tokenizing
records, synthesizing patients): results in the order of the jobs, big jobs first, a progress bar,
and no pool at all for one worker or one job (simpler tracebacks, no start-up cost)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor


def default_workers(n_jobs: int) -> int:
    return max(1, min(n_jobs, os.cpu_count() or 1))


def process_map(fn: Callable, jobs: Sequence, **options) -> list:
    """`[fn(job) for job in jobs]`, spread over processes, results in the jobs' order. `options` are
    `iter_process_map`'s (workers, size, desc, unit, progress)."""
    return [r for _, r in sorted(iter_process_map(fn, jobs, **options), key=lambda t: t[0])]


def iter_process_map(
    fn: Callable,
    jobs: Sequence,
    *,
    workers: int | None = None,
    size: Callable | None = None,
    desc: str = "",
    unit: str = "item",
    progress: bool = True,
) -> Iterator[tuple]:
    """(job index, fn(job)) for every job, spread over `workers` processes (default: one per core),
    yielded in the work order as results come, for a caller that writes them out as they come
    (memory stays flat). `size(job)` orders the work largest first so that no worker is left with a
    big job at the end."""
    from tqdm.auto import tqdm

    order = sorted(range(len(jobs)), key=lambda i: -size(jobs[i])) if size else list(range(len(jobs)))
    workers = workers or default_workers(len(jobs))
    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for i in order:
                yield i, fn(jobs[i])
                bar.update()
            return
        with ProcessPoolExecutor(workers) as pool:
            for i, result in zip(order, pool.map(fn, [jobs[i] for i in order], chunksize=1)):
                yield i, result
                bar.update()
