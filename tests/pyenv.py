#!/usr/bin/env python3
"""The one Python environment of labhub's tests: a venv under target/ (target/pyenv) holding the
pinned packages of tests/python/requirements.txt, created once and reused.

    python3 tests/pyenv.py          # makes or refreshes the venv, prints its python's path

It is rebuilt only when the requirements file or the base interpreter changed (a stamp file
records both), and concurrent callers (test processes running at once) wait on a lock, so it
is made once. Nothing is installed outside target/.
"""

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "tests" / "python" / "requirements.txt"


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")).resolve()


def env_dir() -> Path:
    return target_dir() / "pyenv"


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def wanted_stamp() -> str:
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    return f"{digest} {sys.version.split()[0]} {os.path.realpath(sys.executable)}\n"


def ensure() -> Path:
    env = env_dir()
    env.parent.mkdir(parents=True, exist_ok=True)
    stamp = env / "labhub-stamp"
    with open(env.parent / "pyenv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        want = wanted_stamp()
        if stamp.exists() and stamp.read_text() == want and python_of(env).exists():
            return python_of(env)
        if env.exists():
            shutil.rmtree(env)
        venv.EnvBuilder(with_pip=True).create(env)
        subprocess.run(
            [str(python_of(env)), "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
            check=True,
        )
        stamp.write_text(want)
        return python_of(env)


if __name__ == "__main__":
    print(ensure())
