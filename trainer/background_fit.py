"""One ``fit`` of a window's candidate, running in a thread and fed chunk by chunk.

The window's reader hands over chunks as they become trainable; the thread trains on them in a
single pass (:func:`model.training.fit_chunks`) while the next ones are read, scored and merged.
The hand-over queue holds one chunk: a reader ahead of training waits there, so no more than a
chunk or two are held in memory beyond what the window keeps anyway. An error in training is
raised again in the reader, at its next hand-over or at :meth:`BackgroundFit.finish`.

>>> import numpy as np
>>> trained = []
>>> def fake_fit(config, model, chunks, batch):  # stands in for model.training.fit_chunks
...     trained.extend(len(labels) for _, labels, _ in chunks)
>>> run = BackgroundFit(None, "model", batch=2, fit=fake_fit)
>>> run.put(({}, np.zeros(3), np.zeros(3))); run.put(({}, np.zeros(5), np.zeros(5)))
>>> seconds = run.finish()
>>> trained
[3, 5]
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from model.training import fit_chunks

_END = object()


class BackgroundFit:
    """A thread running ``fit(config, model, chunks, batch)`` over the chunks put to it."""

    def __init__(self, config, model, batch: int, fit: Callable = fit_chunks):
        self._chunks: queue.Queue = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._seconds = 0.0
        self._thread = threading.Thread(
            target=self._run, args=(fit, config, model, batch), name="window-fit", daemon=True
        )
        self._thread.start()

    def _run(self, fit, config, model, batch) -> None:
        started = time.perf_counter()
        try:
            fit(config, model, iter(self._chunks.get, _END), batch)
        except BaseException as error:  # raised again in the reader's thread
            self._error = error
            while self._chunks.get() is not _END:  # let the reader go on to finish()
                pass
        self._seconds = time.perf_counter() - started

    def put(self, chunk: tuple) -> None:
        """Hand over a chunk (inputs, labels, hard); waits while the previous one is queued."""
        self._raise()
        self._chunks.put(chunk)

    def finish(self) -> float:
        """Wait for training to end; its duration in seconds (from the first chunk's start)."""
        self._chunks.put(_END)
        self._thread.join()
        self._raise()
        return self._seconds

    def _raise(self) -> None:
        if self._error is not None:
            raise RuntimeError("training the window's candidate failed") from self._error
