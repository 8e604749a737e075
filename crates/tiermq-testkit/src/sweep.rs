//! Clean-up of nodes whose owning process died without running destructors (SIGKILL, a test
//! harness timeout). Each running node leaves a marker `<owner pid> <node pid> <base dir>` in the
//! testkit folder; a marker whose owner is gone names a node to kill.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::TestkitError;

/// `$TMPDIR/tiermq-testkit`, readable by the `rabbitmq` user so test nodes can live below it.
pub(crate) fn testkit_root() -> Result<PathBuf, TestkitError> {
    let root = std::env::temp_dir().join("tiermq-testkit");
    fs::create_dir_all(&root).map_err(TestkitError::io("create testkit folder", &root))?;
    set_mode(&root, 0o755)?;
    Ok(root)
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<(), TestkitError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(TestkitError::io("chmod", path))
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn markers_dir() -> Result<PathBuf, TestkitError> {
    let dir = testkit_root()?.join("running");
    fs::create_dir_all(&dir).map_err(TestkitError::io("create marker folder", &dir))?;
    Ok(dir)
}

/// Records a running node; the returned path is removed when the node is stopped.
pub(crate) fn write_marker(node_pid: u32, base_dir: &Path) -> Result<PathBuf, TestkitError> {
    let path = markers_dir()?.join(format!("{}-{node_pid}", std::process::id()));
    let text = format!("{} {node_pid} {}", std::process::id(), base_dir.display());
    fs::write(&path, text).map_err(TestkitError::io("write node marker", &path))?;
    Ok(path)
}

/// Kills nodes left behind by dead owners. Only a process whose command line still mentions the
/// node's base folder is killed, so a recycled pid is never hit.
pub(crate) fn sweep_orphans() {
    let Ok(dir) = markers_dir() else { return };
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        let mut parts = text.splitn(3, ' ');
        let (Some(owner), Some(node), Some(base)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(owner), Ok(node)) = (owner.parse::<u32>(), node.parse::<i32>()) else {
            continue;
        };
        if pid_alive(owner) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{node}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(base) {
            tracing::warn!(
                node_pid = node,
                base,
                "killing a RabbitMQ node left by a dead test process"
            );
            // SAFETY: plain syscall; the node leads its own process group.
            unsafe {
                libc::kill(-node, libc::SIGKILL);
            }
        }
        // Throw-away folders made by `start_nodes` live under the testkit folder; others (a
        // kubesim "PVC") belong to their owner and stay.
        if let Ok(root) = testkit_root()
            && Path::new(base).starts_with(root.join("nodes"))
        {
            let _ = fs::remove_dir_all(base);
        }
        let _ = fs::remove_file(&path);
    }
}
