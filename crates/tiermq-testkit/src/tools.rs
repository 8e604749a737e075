//! The command-line tools tests drive: the machine's kubectl, the pinned `helm` and newest
//! `kubectl` that `make setup` (`.ci/setup-tools`) puts into the project's tools folder, and
//! `promtool` from Debian's `prometheus` package (`make setup` installs it when missing).
//!
//! A test that needs a pinned tool asks [`require`]: when the tool is missing it is skipped with a
//! message saying how to install it, except under CI (`CI` set to anything but `false`/`0`),
//! where a missing tool fails the test, so CI never passes by skipping.

use std::path::{Path, PathBuf};

/// Overrides the tools folder (default `<workspace>/.tools`); `.ci/setup-tools` reads it too.
pub const TOOLS_DIR_ENV: &str = "TIERMQ_TOOLS_DIR";

/// The machine's own kubectl (1.32 on this project's machines).
pub const MACHINE_KUBECTL: &str = "/usr/bin/kubectl";

/// A pinned tool in the tools folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `helm` 4.1.4.
    Helm,
    /// The newest `kubectl` the wheels carry (1.37.1).
    NewestKubectl,
    /// `promtool`, from Debian's `prometheus` package (2.42 on Debian 12), found on `PATH`.
    Promtool,
}

impl Tool {
    /// The file name in `<tools>/bin`.
    pub fn file_name(self) -> &'static str {
        match self {
            Tool::Helm => "helm",
            Tool::NewestKubectl => "kubectl",
            Tool::Promtool => "promtool",
        }
    }

    /// The version `.ci/setup-tools` pins (its sha256 pins are the authority).
    pub fn pinned_version(self) -> &'static str {
        match self {
            Tool::Helm => "v4.1.4",
            Tool::NewestKubectl => "v1.37.1",
            Tool::Promtool => "(Debian's prometheus package)",
        }
    }

    /// Where the tool is looked for: the tools folder, or `PATH` for a Debian package's tool.
    fn location(self) -> PathBuf {
        match self {
            Tool::Helm | Tool::NewestKubectl => bin_dir().join(self.file_name()),
            Tool::Promtool => std::env::var_os("PATH")
                .map(|path| {
                    std::env::split_paths(&path)
                        .map(|d| d.join(self.file_name()))
                        .find(|p| p.is_file())
                        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(self.file_name()))
                })
                .unwrap_or_else(|| PathBuf::from("/usr/bin").join(self.file_name())),
        }
    }
}

/// `<tools>/bin`: `$TIERMQ_TOOLS_DIR/bin`, else `<workspace>/.tools/bin`.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os(TOOLS_DIR_ENV) {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("bin"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin"),
    }
}

/// Where `tool` is installed, if it is.
pub fn installed(tool: Tool) -> Option<PathBuf> {
    let p = tool.location();
    p.is_file().then_some(p)
}

/// Whether the tests run under CI (`CI` set, and not `false`, `0` or empty).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
}

/// `tool`'s path, or `None` after printing why `test` is skipped. Under CI a missing tool panics:
/// CI runs `make setup` first, so a missing tool there is a broken setup, not a reason to skip.
pub fn require(tool: Tool, test: &str) -> Option<PathBuf> {
    if let Some(p) = installed(tool) {
        return Some(p);
    }
    let how = match tool {
        Tool::Helm | Tool::NewestKubectl => "run `make tools` or `make setup`",
        Tool::Promtool => "run `make setup`, which installs Debian's prometheus package",
    };
    let why = format!(
        "{} {} is not installed at {} ({how})",
        tool.file_name(),
        tool.pinned_version(),
        tool.location().display()
    );
    if under_ci() {
        panic!("{test}: {why}; CI must not skip this test");
    }
    eprintln!("SKIPPED {test}: {why}");
    None
}
