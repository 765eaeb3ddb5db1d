"""One executor interface for the whole project: serial, local threads/processes, or Dask distributed."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class ExecutorError(RuntimeError):
    """The requested executor cannot run (e.g. Dask not installed or the scheduler unreachable)."""


def map_unordered(fn: Callable[[T], R], items: Iterable[T], jobs: int = 1, *, processes: bool = False,
                  scheduler: str | None = None) -> Iterator[R]:
    """Results of ``fn`` over ``items`` as they complete.

    Serial when ``jobs`` is 1 and no scheduler is given. Threads suit work that waits on
    subprocesses or I/O (dcm2niix); processes suit CPU work (header parsing, fitting). With
    ``scheduler`` (a Dask scheduler address such as ``tcp://host:8786``, extra ``qmrbids[dask]``)
    every item is one task on the cluster; ``fn`` and the items must be picklable and the paths
    they name visible to the workers.
    """
    items = list(items)
    if scheduler is not None:
        yield from _dask_map(fn, items, scheduler)
        return
    if jobs <= 1 or len(items) <= 1:
        for item in items:
            yield fn(item)
        return
    pool_type = ProcessPoolExecutor if processes else ThreadPoolExecutor
    with pool_type(max_workers=jobs) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def _dask_map(fn, items, scheduler: str):
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise ExecutorError("--dask-scheduler needs Dask: pip install 'qmrbids[dask]'") from None
    if not items:
        return
    try:
        client = Client(scheduler, timeout=30)
    except OSError as error:
        raise ExecutorError(f"cannot reach the Dask scheduler {scheduler}: {error}") from None
    with client:
        futures = client.map(fn, items, pure=False)
        try:
            for future in dask_completed(futures):
                yield future.result()
        except BaseException:
            client.cancel(futures)
            raise
