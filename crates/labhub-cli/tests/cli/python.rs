//! The Python the recording tests read recordings with: a virtual environment under the
//! target directory with pinned zarr-python (and what it needs for the crc32c codec),
//! created once and reused. The one place to switch to a shared test environment.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Pinned packages (zarr-python reads the shard index's crc32c through `crc32c`).
const PACKAGES: [&str; 3] = ["zarr==3.1.6", "crc32c==2.7.1", "numpy==2.4.6"];

/// The venv's python, creating the venv and installing [`PACKAGES`] if needed; `None` if
/// there is no python3 on this machine.
pub fn zarr_python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("venv-zarr-3.1.6");
    let python = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import zarr, crc32c"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return Some(python);
    }
    // Serialises the install between test threads and processes.
    let _lock = labhub::filelock::FileLock::lock(venv.with_extension("lock")).ok();
    if ready(&python) {
        return Some(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .ok()?;
    assert!(made.success(), "python3 -m venv {} failed", venv.display());
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PACKAGES)
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "pip install {PACKAGES:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(python)
}

/// What `tests/python/read_recording.py` reads from recording `path`.
pub fn read_recording(python: &Path, path: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/read_recording.py");
    let out = Command::new(python)
        .arg(script)
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "zarr-python could not read {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}
