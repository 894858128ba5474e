"""SIGTERM and SIGHUP take Ctrl-C's path: each becomes an exception in the main thread, so the same
`finally` blocks that clean up after Ctrl-C (the running container removed, staging directories
gone) run for a cancelled CI job, `timeout` or a dropped SSH session too."""

from __future__ import annotations

import contextlib
import signal
import threading

from .contract import Exit

# Signal -> the exit code a shell would report for a process it ended (128 + its number).
EXIT_FOR = {signal.SIGTERM: Exit.TERMINATED, signal.SIGHUP: Exit.HANGUP}


class Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM or SIGHUP. A KeyboardInterrupt, so every cleanup written
    for Ctrl-C runs for it too; `exit_code` is 128 + the signal's number."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = EXIT_FOR[signum]
        self.name = signal.Signals(signum).name


def _raise(signum, frame) -> None:
    # A second signal must not cut the cleanup short: it is bounded by the engine's own timeouts.
    for other in EXIT_FOR:
        signal.signal(other, signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def terminating_raises():
    """While inside, SIGTERM and SIGHUP raise Terminated; the previous handlers come back after.
    Outside the main thread (a test runner's worker) signals cannot be handled: nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _raise) for signum in EXIT_FOR}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
