"""One executor interface for the whole project: serial, or local threads/processes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_unordered(fn: Callable[[T], R], items: Iterable[T], jobs: int = 1, *, processes: bool = False) -> Iterator[R]:
    """Results of ``fn`` over ``items`` as they complete; serial when ``jobs`` is 1.

    Threads suit work that waits on subprocesses or I/O (dcm2niix); processes suit pure-Python
    CPU work (header parsing).
    """
    items = list(items)
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
