//! Clean-up of nodes whose owning process died without running destructors (SIGKILL, a test
//! harness timeout). Each running node leaves a marker `<owner pid> <node pid> <base dir>` in the
//! testkit folder; a marker whose owner is gone names a node to kill.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::TestkitError;
use crate::runtime::BrokerRuntime;

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

/// Where the absolute host path `path` appears inside `root` (`root` + `path`); `None` for a
/// relative path or one with `..` (it could point outside the root).
pub(crate) fn path_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = root.to_path_buf();
    let mut parts = path.components();
    if parts.next() != Some(Component::RootDir) {
        return None;
    }
    for part in parts {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (out != root).then_some(out)
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// `pid` exists and is not a zombie.
fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses, which may itself hold ") ".
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
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

/// Kills the nodes of test processes that died without running destructors (each node start
/// does this too) and removes their throw-away folders. Safe to call at any time: a node whose
/// owner is alive is never touched, and a pid is only signalled while its command line still
/// names the node's folder.
pub fn sweep_stale_nodes() {
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
            // Not our child: wait (bounded) until it is gone or a zombie before its folder goes.
            for _ in 0..50 {
                if !running(node as u32) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
        // A 4.0 node's mount point inside the root: an empty folder once the node is gone (its
        // bind mount lived in the node's own mount namespace). `remove_dir` removes nothing else.
        if let Some(mount_point) = BrokerRuntime::Debian13V40
            .root()
            .and_then(|root| path_in_root(&root, Path::new(base)))
        {
            let _ = fs::remove_dir(mount_point);
        }
        // Throw-away folders made by `start_nodes` live under the testkit folder; others (a
        // kubesim "PVC") belong to their owner and stay.
        // (A 4.0 node's marker names the folder's real path: compare real paths.)
        if let Ok(nodes) = testkit_root().map(|root| {
            let nodes = root.join("nodes");
            fs::canonicalize(&nodes).unwrap_or(nodes)
        }) && Path::new(base).starts_with(&nodes)
        {
            let _ = fs::remove_dir_all(base);
        }
        let _ = fs::remove_file(&path);
    }
    sweep_mount_points();
}

/// Empty mount points in the 4.0 root whose node folder is gone from the host: left when an
/// older testkit (which knew nothing of them) swept the node. A running node's folder always
/// exists, and `remove_dir` only removes empty folders.
fn sweep_mount_points() {
    let Some(root) = BrokerRuntime::Debian13V40.root() else {
        return;
    };
    let Ok(nodes) = testkit_root().map(|r| r.join("nodes")) else {
        return;
    };
    let nodes = fs::canonicalize(&nodes).unwrap_or(nodes);
    let Some(inside) = path_in_root(&root, &nodes) else {
        return;
    };
    let Ok(entries) = fs::read_dir(&inside) else {
        return;
    };
    for entry in entries.flatten() {
        if !nodes.join(entry.file_name()).exists() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_into_the_root_and_never_out_of_it() {
        let root = Path::new("/var/cache/r");
        assert_eq!(
            path_in_root(root, Path::new("/tmp/tiermq-testkit/nodes/node-1")),
            Some(PathBuf::from(
                "/var/cache/r/tmp/tiermq-testkit/nodes/node-1"
            ))
        );
        assert_eq!(path_in_root(root, Path::new("tmp/x")), None);
        assert_eq!(path_in_root(root, Path::new("/tmp/../etc")), None);
        assert_eq!(path_in_root(root, Path::new("/")), None);
    }
}
