"""A signal stops a command from a thread of its own: the handler takes no lock.

Each case runs in a child Python (signal handlers belong to a process's main thread,
and these send signals): a handler that called the stop itself would wait for ever on
a lock its own thread held when the signal came (``aifr worker`` hung on SIGTERM so).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(script: str, timeout_s: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_stop_waits_for_a_lock_the_interrupted_thread_holds() -> None:
    # The signal comes while the main thread holds the lock the stop needs: called in
    # the handler, the stop would wait for that lock in the thread that holds it.
    out = _run(
        """
        import os, signal, threading, time
        from aifr.cli.signals import StopOnSignals

        lock = threading.Lock()
        stopped = threading.Event()

        def stop():
            with lock:
                stopped.set()

        with StopOnSignals(stop):
            with lock:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.3)  # the handler runs in here, between two bytecodes
                print("held", stopped.is_set())
            print("stopped", stopped.wait(10))
        """
    )
    assert out.split() == ["held", "False", "stopped", "True"]


def test_a_storm_of_signals_stops_once_while_the_main_thread_waits_on_the_event() -> None:
    # The worker's own shape: the main thread sleeps on an event in short waits, and
    # the stop sets that event. Hundreds of signals land inside those waits.
    out = _run(
        """
        import os, signal, threading
        from aifr.cli.signals import StopOnSignals

        wake = threading.Event()
        calls = []

        def stop():
            calls.append(1)
            wake.set()

        def storm():
            for _ in range(300):
                os.kill(os.getpid(), signal.SIGTERM)

        with StopOnSignals(stop):
            sender = threading.Thread(target=storm)
            sender.start()
            while not wake.is_set():
                wake.wait(0.0005)
            sender.join()
        print("calls", len(calls))
        """
    )
    assert out.split() == ["calls", "1"]


def test_the_previous_handlers_come_back_and_no_signal_means_no_stop() -> None:
    out = _run(
        """
        import signal
        from aifr.cli.signals import StopOnSignals

        calls = []
        before = signal.getsignal(signal.SIGINT)
        with StopOnSignals(lambda: calls.append(1)):
            inside = signal.getsignal(signal.SIGINT)
        print(inside is not before, signal.getsignal(signal.SIGINT) is before, len(calls))
        """
    )
    assert out.split() == ["True", "True", "0"]


def test_a_failing_stop_is_logged_not_raised_in_the_stopping_thread() -> None:
    out = _run(
        """
        import logging, os, signal, time
        from aifr.cli.signals import StopOnSignals

        logging.basicConfig(level=logging.ERROR, format="%(message)s")

        def stop():
            raise RuntimeError("boom")

        with StopOnSignals(stop, signals=(signal.SIGTERM,)):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.3)
        print("exited")
        """
    )
    assert out.split() == ["exited"]
