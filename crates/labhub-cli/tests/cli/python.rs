//! The Python the recording tests read recordings with: the tests' one venv under the target
//! directory (`tests/pyenv.py`, the pinned packages of `tests/python/requirements.txt`, among
//! them zarr-python and the crc32c codec it reads shard indexes with), made once and reused.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv's python, making the venv if needed; `None` if there is no python3 on this
/// machine. Fails the test if the venv cannot be made.
pub fn zarr_python() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/pyenv.py");
    let out = Command::new("python3").arg(script).output().ok()?;
    assert!(
        out.status.success(),
        "tests/pyenv.py could not make the test venv:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
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
