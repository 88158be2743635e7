"""Progress for long steps: the step under way and the time spent, so slow != hung."""
import subprocess
import sys
import threading
import time
from pathlib import Path


def say(msg: str) -> None:
    print(f"[lab] {msg}", flush=True)


class Step:
    """`with Step("booting hosts"):` prints start, a heartbeat every `beat` s, and the time."""

    def __init__(self, title: str, beat: float = 20.0, tail: Path | None = None):
        self.title, self.beat, self.tail = title, beat, tail
        self._stop = threading.Event()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.beat):
            last = ""
            if self.tail and self.tail.exists():
                lines = self.tail.read_text(errors="replace").strip().splitlines()
                last = f" | {lines[-1][:100]}" if lines else ""
            say(f"  ... {self.title}: {self.elapsed():.0f}s{last}")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def __enter__(self):
        self.t0 = time.monotonic()
        say(f"{self.title} ...")
        threading.Thread(target=self._heartbeat, daemon=True).start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop.set()
        verdict = "done" if exc_type is None else "FAILED"
        say(f"{self.title}: {verdict} in {self.elapsed():.1f}s")
        return False


def run_logged(argv: list[str], log: Path, **kw) -> None:
    """Run argv with its output appended to `log`; on failure show the log's tail."""
    with open(log, "ab") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, **kw)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        sys.stderr.write("\n".join(tail) + "\n")
        raise SystemExit(f"[lab] {argv[0]} failed (exit {proc.returncode}); full log: {log}")
