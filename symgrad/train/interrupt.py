"""Ctrl-C held until a safe point, so an interrupted ``fit`` leaves nothing half done.

A KeyboardInterrupt raised in the middle of a Numba compile can leave Numba's in-process
state broken (a later compile then fails with "no compiled object yet"), or be swallowed by
one of LLVM's ctypes callbacks; one raised between a chunk of epochs and its record in the
History loses those epochs. So while ``fit`` compiles and trains, a Ctrl-C only sets
:attr:`Interrupts.pending`, and ``fit`` raises the KeyboardInterrupt itself at the next safe
point (:meth:`Interrupts.check`): when the compile is done, between chunks of epochs.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["COMPILING", "TRAINING", "Interrupts", "deferred"]

#: What a held Ctrl-C prints while Numba compiles, and while the loop trains.
COMPILING = "stopping when the compile in progress is done (Numba cannot be interrupted safely)"
TRAINING = "stopping after this chunk of epochs (press again to stop at once)"


class Interrupts:
    """Holds SIGINT between :meth:`start` and :meth:`stop` (or in a :meth:`held` block).

    Only in the main thread and only over Python's default SIGINT handler: a handler of the
    user's or a framework's stays untouched (KeyboardInterrupt then arrives as usual). With
    ``forceable``, a second Ctrl-C raises KeyboardInterrupt at once; without (while Numba
    compiles), every Ctrl-C waits for the safe point.
    """

    def __init__(self) -> None:
        self.pending = False
        self._forceable = False
        self._note = ""
        self._previous = None

    def start(self, forceable: bool = False, note: str = "") -> None:
        self._forceable, self._note = forceable, note
        if (self._previous is None and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def stop(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    @contextmanager
    def held(self, forceable: bool = False, note: str = "") -> Iterator[Interrupts]:
        self.start(forceable, note)
        try:
            yield self
        finally:
            self.stop()

    def check(self) -> None:
        """Raise the KeyboardInterrupt of a Ctrl-C that was held."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def _handler(self, signum, frame) -> None:
        if self.pending and self._forceable:
            raise KeyboardInterrupt
        if not self.pending and self._note:
            print(f"symgrad: Ctrl-C: {self._note}", file=sys.stderr, flush=True)
        self.pending = True


@contextmanager
def deferred() -> Iterator[None]:
    """SIGINT's Python handler (an :class:`Interrupts` one, the user's or Python's own)
    deferred to the end of the block, for work that must not stop halfway (main thread
    only, where handlers run): each Ctrl-C during the block is handed to it then, in order."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for frame in caught:
            if callable(previous):
                previous(signal.SIGINT, frame)
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)
