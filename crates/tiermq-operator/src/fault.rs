//! A crash hook for the crash tests, inert unless its environment variable is set.
//!
//! `TIERMQ_TEST_CRASH_BEFORE_STATUS` lists migration phases (comma-separated, `all` for every
//! one). When a pass moves an instance into a listed phase, the process aborts right after the
//! plan's steps ran and before the status write that records them: the state a SIGKILL between
//! a step and its record leaves behind. Each (instance, phase) crashes once: a mark file in
//! `TIERMQ_TEST_CRASH_MARKS` (a directory) remembers it across the restarts.
//!
//! Why in the binary: a kill from outside lands between a step and its record only by chance;
//! this lands there every time, in every phase.

use std::path::PathBuf;

use tiermq_crd::MigrationPhase;

/// Phases to crash in, comma-separated, or `all`.
pub const CRASH_ENV: &str = "TIERMQ_TEST_CRASH_BEFORE_STATUS";
/// Directory of the marks of crashes that already happened.
pub const MARKS_ENV: &str = "TIERMQ_TEST_CRASH_MARKS";

/// Called after a plan's steps ran and before its status is written: aborts the process when
/// the hook asks for a crash here and it has not happened yet.
pub fn before_status_write(
    instance: &str,
    recorded: Option<MigrationPhase>,
    planned: MigrationPhase,
) {
    let Ok(phases) = std::env::var(CRASH_ENV) else {
        return;
    };
    if recorded == Some(planned) {
        return;
    }
    let name = format!("{planned:?}");
    let listed = phases
        .split(',')
        .map(str::trim)
        .any(|p| p.eq_ignore_ascii_case("all") || p == name);
    if !listed {
        return;
    }
    let dir = std::env::var(MARKS_ENV).map_or_else(|_| std::env::temp_dir(), PathBuf::from);
    let mark = dir.join(format!("{}.{name}", instance.replace('/', ".")));
    if mark.exists() {
        return;
    }
    if let Err(e) = std::fs::write(&mark, b"") {
        tracing::error!(error = %e, mark = %mark.display(), "crash hook: cannot write its mark; not crashing");
        return;
    }
    tracing::warn!(%instance, phase = %name, "crash hook: aborting after the steps, before the status write");
    std::process::abort();
}
