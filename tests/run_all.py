#!/usr/bin/env python3
"""Runs every test of labhub: `cargo test --workspace`, then the Python package's pytest
suite against a fresh build of the package installed into the test venv under target/
(tests/pyenv.py), so nothing is installed outside the checkout.

    python3 tests/run_all.py            # everything
    python3 tests/run_all.py --python   # only the Python suite (after a cargo build)

Extra arguments after `--` go to pytest.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import pyenv  # noqa: E402


def run(cmd, **kw):
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, cwd=ROOT, **kw).returncode


def main() -> int:
    args = sys.argv[1:]
    pytest_args = []
    if "--" in args:
        i = args.index("--")
        args, pytest_args = args[:i], args[i + 1:]
    if "--python" not in args:
        if run(["cargo", "test", "--workspace", "--locked"]) != 0:
            return 1
    else:
        if run(["cargo", "build", "--workspace", "--locked", "--bins"]) != 0:
            return 1
    python = pyenv.ensure()
    env = dict(os.environ)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    # A debug build for the tests (the bench builds its own in release).
    env["MATURIN_PEP517_ARGS"] = "--profile dev"
    if run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--no-build-isolation", "--no-deps", "--force-reinstall", "./python"], env=env) != 0:
        return 1
    code = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "python/tests",
                *pytest_args], env=env)
    if code == 5:
        print("pytest collected no tests", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
