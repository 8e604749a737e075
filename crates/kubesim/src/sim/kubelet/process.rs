//! One container as a host process, set up the way a container runtime would where it matters to
//! the program inside:
//!
//! - its own **mount namespace** (`unshare(CLONE_NEWNS)`, made private so nothing leaks back to
//!   the host), with a fresh tmpfs on `/run` (a container has its own) and the pod's
//!   ServiceAccount folder bound read-only at `/var/run/secrets/kubernetes.io/serviceaccount`,
//!   where client libraries (kube-rs, client-go) look for `token`, `ca.crt` and `namespace`
//!   (the host's `/run` is hidden from it, so an `/etc/resolv.conf` that links into `/run`, as
//!   with systemd-resolved, leaves the program without DNS: address services by IP);
//! - the pod's **user and groups** (`runAsUser`, `runAsGroup`, `supplementalGroups`, `fsGroup`)
//!   and `no_new_privs` when `allowPrivilegeEscalation: false`;
//! - the container's environment only (nothing of kubesim's), working directory `/` (or
//!   `workingDir`), stdin closed, stdout and stderr appended to the run's log file;
//! - its own **process group**, so stopping it reaches every process it started.
//!
//! The host's network stays shared: the program binds and connects on the host's loopback like
//! every simulated pod (see the kubelet docs). Setting up namespaces and mounts needs root, as
//! for a real kubelet; kubesim's broker pods need it anyway.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

/// Where client libraries look for the pod's ServiceAccount credentials.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Everything needed to start one run of a container.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The program the image stands for.
    pub program: PathBuf,
    /// Its arguments (the container's `args`, expanded).
    pub args: Vec<String>,
    /// Its whole environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory inside the container (`/` unless `workingDir` says otherwise).
    pub cwd: String,
    /// `runAsUser`; `None`: kubesim's own user (an image without `USER`).
    pub uid: Option<u32>,
    /// `runAsGroup` (0 when only a user is given, as runtimes do).
    pub gid: Option<u32>,
    /// Supplementary groups (`supplementalGroups`, `fsGroup`).
    pub groups: Vec<u32>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// Host folder with `token`, `ca.crt` and `namespace`, bound at [`SERVICE_ACCOUNT_DIR`].
    pub service_account: Option<PathBuf>,
    /// The run's log file (stdout and stderr), appended to.
    pub log: PathBuf,
}

/// A running container process (leader of its own process group).
pub struct Running {
    child: tokio::process::Child,
    pid: u32,
}

fn cstr(p: impl AsRef<std::ffi::OsStr>) -> std::io::Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a path or name contains a NUL byte",
        )
    })
}

/// `errno` of the last call as an error (callable after fork: no allocation).
fn last() -> std::io::Error {
    std::io::Error::last_os_error()
}

impl Running {
    /// Starts the process. Fails the way a container runtime's start fails (the program is
    /// missing or not executable for the user, the working directory is unusable, ...).
    pub fn spawn(l: &Launch) -> std::io::Result<Running> {
        if let Some(parent) = l.log.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&l.log)?;
        let err = log.try_clone()?;
        // /var/run is usually a link to /run: mount on the real folder.
        let run_dir = std::fs::canonicalize("/var/run").unwrap_or_else(|_| "/var/run".into());
        let secrets = run_dir.join("secrets");
        let k8s = secrets.join("kubernetes.io");
        let sa_target = k8s.join("serviceaccount");
        let c_root = cstr("/")?;
        let c_run = cstr(&run_dir)?;
        let c_tmpfs = cstr("tmpfs")?;
        let c_opts = cstr("mode=0755")?;
        let c_dirs = [cstr(&secrets)?, cstr(&k8s)?, cstr(&sa_target)?];
        let c_sa_src = l.service_account.as_ref().map(cstr).transpose()?;
        let c_sa_target = cstr(&sa_target)?;
        let c_cwd = cstr(&l.cwd)?;
        let (uid, gid, groups, no_new_privs) = (
            l.uid,
            l.gid.or(l.uid.map(|_| 0)),
            l.groups
                .iter()
                .map(|g| *g as libc::gid_t)
                .collect::<Vec<_>>(),
            l.no_new_privs,
        );
        let mut cmd = tokio::process::Command::new(&l.program);
        cmd.args(&l.args)
            .env_clear()
            .envs(l.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false);
        // SAFETY: between fork and exec only raw system calls run (no allocation, no locks):
        // every path was turned into a CString above.
        unsafe {
            cmd.pre_exec(move || {
                let null = std::ptr::null::<libc::c_char>();
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(last());
                }
                if libc::mount(
                    null,
                    c_root.as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(last());
                }
                if libc::mount(
                    c_tmpfs.as_ptr(),
                    c_run.as_ptr(),
                    c_tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    c_opts.as_ptr().cast(),
                ) != 0
                {
                    return Err(last());
                }
                if let Some(src) = &c_sa_src {
                    for d in &c_dirs {
                        if libc::mkdir(d.as_ptr(), 0o755) != 0 {
                            return Err(last());
                        }
                    }
                    if libc::mount(
                        src.as_ptr(),
                        c_sa_target.as_ptr(),
                        null,
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(last());
                    }
                    if libc::mount(
                        null,
                        c_sa_target.as_ptr(),
                        null,
                        libc::MS_BIND
                            | libc::MS_REMOUNT
                            | libc::MS_RDONLY
                            | libc::MS_NOSUID
                            | libc::MS_NODEV,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(last());
                    }
                }
                if no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(last());
                }
                if let Some(gid) = gid {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0 {
                        return Err(last());
                    }
                    if libc::setgid(gid) != 0 {
                        return Err(last());
                    }
                }
                if let Some(uid) = uid
                    && libc::setuid(uid) != 0
                {
                    return Err(last());
                }
                // As the container's user: a folder it may not enter fails the start.
                if libc::chdir(c_cwd.as_ptr()) != 0 {
                    return Err(last());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id().unwrap_or_default();
        Ok(Running { child, pid })
    }

    /// The process id (and process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How the process ended, once it has.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `sig` to the whole process group while the leader lives.
    fn signal(&mut self, sig: i32) {
        if self.try_exit().is_none() && self.pid > 0 {
            // SAFETY: plain syscall on the group this process leads.
            unsafe {
                libc::kill(-(self.pid as i32), sig);
            }
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace`; returns how the process ended.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        if let Ok(Ok(st)) = tokio::time::timeout(grace, self.child.wait()).await {
            kill_group(self.pid);
            return Some(st);
        }
        self.kill().await
    }

    /// SIGKILL to the group; returns how the process ended.
    pub async fn kill(&mut self) -> Option<ExitStatus> {
        self.signal(libc::SIGKILL);
        kill_group(self.pid);
        tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

/// SIGKILL to process group `pgid` (what is left of a container after its main process ended;
/// also used when the kubelet is dropped).
pub fn kill_group(pgid: u32) {
    if pgid > 0 {
        // SAFETY: plain syscall; a group that is gone gives ESRCH, which is fine.
        unsafe {
            libc::kill(-(pgid as i32), libc::SIGKILL);
        }
    }
}

/// The exit code a container status reports: the process's, or 128 + the signal that ended it.
pub fn exit_code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

/// The last `lines` lines of `log` (at most 2 kB, as a termination message from the log is).
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let mut tail = all[all.len().saturating_sub(lines)..].join("\n");
    if tail.len() > 2048 {
        let mut cut = tail.len() - 2048;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_runtime_convention() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("0.log");
        std::fs::write(&f, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&f, 2), "b\nc");
        assert_eq!(log_tail(&dir.path().join("missing"), 2), "");
    }
}
