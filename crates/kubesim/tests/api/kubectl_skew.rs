//! Version skew: every [`crate::kubectl_cli`] test again with the newest kubectl `make setup`
//! installs (1.37), beside the machine's 1.32 that the tests use by default. kubesim reports
//! itself as 1.33, so the two clients sit one minor below and four above it.
//!
//! The run re-executes this test binary with a filter for `kubectl_cli::` and `KUBECTL` pointing
//! at the newer kubectl: the same test code, no second copy to keep in step.

use std::process::Command;

use tiermq_testkit::tools::{self, Tool};

/// The `kubectl_cli` tests this binary holds, as `--list` names them.
fn kubectl_cli_tests(exe: &std::path::Path) -> Vec<String> {
    let out = Command::new(exe)
        .args(["kubectl_cli::", "--list", "--format", "terse"])
        .output()
        .expect("the test binary lists its tests");
    assert!(out.status.success(), "--list failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

#[test]
fn kubectl_cli_tests_pass_with_the_newest_kubectl() {
    let Some(kubectl) = tools::require(
        Tool::NewestKubectl,
        "kubectl_skew::kubectl_cli_tests_pass_with_the_newest_kubectl",
    ) else {
        return;
    };
    let version = Command::new(&kubectl)
        .args(["version", "--client"])
        .output()
        .expect("the newest kubectl runs");
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        version.contains(tools::Tool::NewestKubectl.pinned_version()),
        "{} is not the pinned kubectl: {version}",
        kubectl.display()
    );
    let exe = std::env::current_exe().expect("the test binary's path");
    let expected = kubectl_cli_tests(&exe);
    assert!(
        expected.len() >= 10,
        "too few kubectl_cli tests found to call this a run: {expected:?}"
    );
    let out = Command::new(&exe)
        .args(["kubectl_cli::", "--test-threads", "2"])
        .env("KUBECTL", &kubectl)
        .output()
        .expect("the test binary runs the kubectl_cli tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl_cli tests failed with {}:\n{stdout}\n{stderr}",
        kubectl.display()
    );
    // Every listed test ran and passed: nothing was filtered away by accident.
    let summary = format!("test result: ok. {} passed; 0 failed", expected.len());
    assert!(
        stdout.contains(&summary),
        "expected `{summary}` from the run with {}:\n{stdout}",
        kubectl.display()
    );
}
