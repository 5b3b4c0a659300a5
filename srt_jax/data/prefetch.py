"""Background prefetch: iterate any iterator with items prepared ahead by a daemon thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


@dataclass
class _Failure:
    error: BaseException


def prefetched(items: Iterator[T], depth: int) -> Iterator[T]:
    """Iterate ``items`` with up to ``depth`` of them prepared ahead by a daemon thread.

    ``depth`` 0 iterates in the caller's thread. An error raised while producing an item is
    re-raised to the consumer; closing the returned iterator stops the thread.
    """
    if depth == 0:
        yield from items
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as err:  # handed to the consumer, which re-raises it
            put(_Failure(err))

    worker = threading.Thread(target=produce, name="window-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join(timeout=5.0)
