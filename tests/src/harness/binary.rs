//! Where the operator binary comes from: built once per test process when stale.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (parent of `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// Newest modification time of the files under `dir`.
fn newest_mtime(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// The operator binary: `$TIERMQ_OPERATOR_BIN`; else `target/debug/tiermq-operator` when it is
/// newer than the sources of the operator, CRD and broker crates; else built once per process with
/// `cargo build -p tiermq-operator` (which waits for cargo's build lock).
pub fn operator_binary() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    if let Ok(p) = std::env::var("TIERMQ_OPERATOR_BIN") {
        return Ok(PathBuf::from(p));
    }
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("target"));
            let bin = target.join("debug").join("tiermq-operator");
            let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
            let sources = ["tiermq-operator", "tiermq-crd", "tiermq-broker"]
                .iter()
                .filter_map(|c| newest_mtime(&root.join("crates").join(c)))
                .max();
            if let (Some(b), Some(s)) = (built, sources)
                && b > s
            {
                return Ok(bin);
            }
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-q", "-p", "tiermq-operator", "--bin", "tiermq-operator"])
                .current_dir(&root)
                .status()
                .map_err(|e| format!("run cargo build -p tiermq-operator: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "cargo build -p tiermq-operator failed ({status}); fix the build or set TIERMQ_OPERATOR_BIN"
                ));
            }
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("target"));
            Ok(target.join("debug").join("tiermq-operator"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}
