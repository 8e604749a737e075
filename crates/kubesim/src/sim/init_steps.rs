//! The init containers of a RabbitMQ pod, run as the file operations they consist of.
//!
//! kubesim has no container runtime: a broker pod's main container runs as a host
//! `rabbitmq-server`. Its init containers usually only prepare files on the pod's volumes (copy
//! the Erlang cookie from a Secret volume into the RabbitMQ home and make it owner-only, as
//! Erlang requires). kubesim runs exactly that: an init container whose command is
//! `sh -c SCRIPT` (or `bash -c`, `-ec`, `-euc`), where SCRIPT is commands joined by `&&`, `;` or
//! newlines, each one of
//!
//! - `cp SRC DST` — copies a file (DST may be a folder);
//! - `chmod MODE PATH` — sets an octal mode;
//! - `rm -f PATH` — removes a file if it is there;
//! - `set -e`/`set -eu`/`true`/`:` — nothing.
//!
//! Paths are container paths, resolved through that init container's volume mounts (a path on no
//! volume is refused: the image's own filesystem does not exist here). Any other command makes
//! the pod fail to start with a message naming it. Files keep the user kubesim runs as (`chown`
//! is not supported); their mode is what the script sets.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::volumes::{VolumePaths, host_path};
use super::{Result, SimError, key_of};

/// Runs every init container of `pod` in order (see the module docs), against its volumes.
pub fn run(pod: &Pod, vols: &VolumePaths) -> Result<()> {
    let inits = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten());
    for c in inits {
        run_one(c, vols).map_err(|message| SimError::PodSpec {
            pod: key_of(pod),
            message: format!("init container {}: {message}", c.name),
        })?;
    }
    Ok(())
}

fn run_one(c: &Container, vols: &VolumePaths) -> std::result::Result<(), String> {
    let argv: Vec<&str> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .map(String::as_str)
        .collect();
    let script = match argv.as_slice() {
        [sh, flag, script] if is_shell(sh) && is_dash_c(flag) => *script,
        _ => {
            return Err(format!(
                "kubesim runs an init container of a broker pod only as `sh -c SCRIPT` with \
                 cp, chmod and rm -f commands; it cannot run {argv:?}"
            ));
        }
    };
    for cmd in script
        .split(['\n', ';'])
        .flat_map(|part| part.split("&&"))
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.starts_with('#'))
    {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let path = |p: &str| -> std::result::Result<PathBuf, String> {
            host_path(c, vols, p)
                .ok_or_else(|| format!("{p} is on none of the container's volumes (in {cmd:?})"))
        };
        match words.as_slice() {
            ["set", ..] | ["true"] | [":"] => {}
            ["cp", src, dst] => {
                let from = path(src)?;
                let mut to = path(dst)?;
                if to.is_dir() {
                    to = to.join(from.file_name().unwrap_or_default());
                }
                std::fs::copy(&from, &to).map_err(|e| format!("{cmd:?}: {e}"))?;
            }
            ["chmod", mode, p] => {
                let mode = u32::from_str_radix(mode, 8)
                    .map_err(|_| format!("{cmd:?}: only octal modes are supported"))?;
                std::fs::set_permissions(path(p)?, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("{cmd:?}: {e}"))?;
            }
            ["rm", "-f", p] => match std::fs::remove_file(path(p)?) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{cmd:?}: {e}")),
            },
            _ => {
                return Err(format!(
                    "kubesim cannot run {cmd:?} (only cp SRC DST, chmod MODE PATH, rm -f PATH)"
                ));
            }
        }
    }
    Ok(())
}

fn is_shell(s: &str) -> bool {
    matches!(s, "sh" | "/bin/sh" | "bash" | "/bin/bash")
}

fn is_dash_c(s: &str) -> bool {
    s.starts_with('-') && s.ends_with('c') && s[1..].chars().all(|c| "euxc".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::VolumeMount;

    fn container(script: &str) -> Container {
        let mount = |name: &str, path: &str| VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            ..VolumeMount::default()
        };
        Container {
            name: "setup".into(),
            command: Some(vec!["sh".into(), "-c".into(), script.into()]),
            volume_mounts: Some(vec![
                mount("secret", "/tmp/secret"),
                mount("data", "/var/lib/rabbitmq"),
            ]),
            ..Container::default()
        }
    }

    fn vols(root: &std::path::Path) -> VolumePaths {
        let mut v = VolumePaths::new();
        for n in ["secret", "data"] {
            std::fs::create_dir_all(root.join(n)).unwrap();
            v.insert(n.into(), root.join(n));
        }
        v
    }

    #[test]
    fn the_cookie_is_copied_owner_only_and_replaced_on_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let v = vols(dir.path());
        std::fs::write(dir.path().join("secret/.erlang.cookie"), "C1").unwrap();
        let c = container(
            "rm -f /var/lib/rabbitmq/.erlang.cookie && \
             cp /tmp/secret/.erlang.cookie /var/lib/rabbitmq/.erlang.cookie && \
             chmod 400 /var/lib/rabbitmq/.erlang.cookie",
        );
        run_one(&c, &v).unwrap();
        let cookie = dir.path().join("data/.erlang.cookie");
        assert_eq!(std::fs::read_to_string(&cookie).unwrap(), "C1");
        let mode = std::fs::metadata(&cookie).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        // A restart of the pod runs it again over the read-only file.
        std::fs::write(dir.path().join("secret/.erlang.cookie"), "C2").unwrap();
        run_one(&c, &v).unwrap();
        assert_eq!(std::fs::read_to_string(&cookie).unwrap(), "C2");
    }

    #[test]
    fn other_commands_and_paths_off_the_volumes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let v = vols(dir.path());
        let err = run_one(&container("chown 999 /var/lib/rabbitmq/x"), &v).unwrap_err();
        assert!(err.contains("cannot run"), "{err}");
        let err = run_one(&container("cp /etc/passwd /var/lib/rabbitmq/x"), &v).unwrap_err();
        assert!(err.contains("none of the container's volumes"), "{err}");
        let mut c = container("");
        c.command = Some(vec!["rabbitmq-plugins".into(), "enable".into()]);
        assert!(run_one(&c, &v).unwrap_err().contains("sh -c"));
    }
}
