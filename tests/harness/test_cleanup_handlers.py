"""The harness stops its targets on SIGTERM/SIGINT (tools/harness/targets.py): the handlers are
set by the first target registered in the main thread, even when a background build (the
image loader) registered one first."""

import signal
import threading

from tools.harness import targets


def test_a_first_target_from_a_background_thread_leaves_the_handlers_to_the_main_thread(monkeypatch):
    monkeypatch.setattr(targets, "_handlers_installed", False)
    monkeypatch.setattr(targets, "_atexit_registered", True)  # not a second atexit hook
    monkeypatch.setattr(targets, "_live", {})
    monkeypatch.setattr(targets, "_prev_handlers", {})
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        thread = threading.Thread(target=targets._register, args=(type("T", (), {"name": "loader"})(),))
        thread.start()
        thread.join()
        assert signal.getsignal(signal.SIGTERM) is before[signal.SIGTERM]
        targets._register(type("T", (), {"name": "vm"})())
        assert signal.getsignal(signal.SIGTERM) is targets._on_signal
        assert signal.getsignal(signal.SIGINT) is targets._on_signal
        assert set(targets._live) == {"loader", "vm"}
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
