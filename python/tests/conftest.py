"""Fixtures of the labhub Python tests: unique channel names, child Python processes with a
watchdog, the Rust binaries of the workspace, and a real `labhub hub` on free ports with a
temporary home."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# Longest any one wait of a test may take before it fails (a watchdog, not a performance bound).
WATCHDOG = 30.0


def binary(name: str) -> Path:
    path = TARGET / "debug" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build it with `cargo build --workspace` first")
    return path


@pytest.fixture
def name(request):
    """A channel name unique to this test and process."""
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    n = f"py-{safe}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    yield n
    try:
        import labhub
        labhub.shm.remove_channel(n)
    except Exception:
        pass


class Child:
    """A child process whose stdout lines are read with a watchdog."""

    def __init__(self, args, env=None):
        self.proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )
        self.lines = []
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def expect(self, prefix: str, timeout: float = WATCHDOG) -> str:
        """The first line not seen yet that starts with `prefix`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, line in enumerate(self.lines):
                    if line.startswith(prefix):
                        del self.lines[: i + 1]
                        return line
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    err = self.proc.stderr.read() if self._closed else ""
                    pytest.fail(f"watchdog: no line {prefix!r} from {self.proc.args}; saw {self.lines}\n{err}")
                self._cond.wait(left)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = WATCHDOG) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"watchdog: {self.proc.args} still running after {timeout}s")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def spawn():
    """Starts children (a Python script given as text, or an argv) and kills them at the end."""
    children = []

    def start(script_or_args, *args, env=None):
        if isinstance(script_or_args, str):
            argv = [sys.executable, "-u", "-c", script_or_args, *map(str, args)]
        else:
            argv = [str(a) for a in script_or_args]
        child = Child(argv, env=env)
        children.append(child)
        return child

    yield start
    for c in children:
        c.kill()


class HubProcess:
    def __init__(self, home: Path, proc: subprocess.Popen, ready: dict):
        self.home = home
        self.proc = proc
        self.endpoint = ready["endpoint"]
        self.notify_endpoint = ready["notify_endpoint"]
        self.public_key = ready["public_key"]

    def client(self, **kw):
        import labhub
        return labhub.Hub(str(self.home), endpoint=self.endpoint,
                          notify_endpoint=self.notify_endpoint, **kw)

    def cli(self, *args: str, timeout: float = WATCHDOG) -> str:
        out = subprocess.run(
            [str(binary("labhub")), *args, "--home", str(self.home), "--broker", self.endpoint],
            capture_output=True, text=True, timeout=timeout,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout


def start_hub(home: Path) -> HubProcess:
    proc = subprocess.Popen(
        [str(binary("labhub")), "hub", "--home", str(home), "--endpoint", "tcp://127.0.0.1:*",
         "--notify-endpoint", "tcp://127.0.0.1:*", "--heartbeat-interval-ms", "200",
         "--max-missed-heartbeats", "5", "--json", "--log-level", "warn"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    ready = {}
    timer = threading.Timer(WATCHDOG, proc.kill)
    timer.start()
    try:
        line = proc.stdout.readline()
        ready = json.loads(line)
    finally:
        timer.cancel()
    if not ready:
        proc.kill()
        pytest.fail("watchdog: labhub hub printed no ready line")
    return HubProcess(home, proc, ready)


@pytest.fixture
def hub_process():
    """A real `labhub hub` on free loopback ports with a temporary home (0700)."""
    home = Path(tempfile.mkdtemp(prefix="labhub-py-"))
    os.chmod(home, 0o700)
    hub = start_hub(home)
    yield hub
    hub.proc.kill()
    hub.proc.wait()
    shutil.rmtree(home, ignore_errors=True)
