//! kubesim is test and demo infrastructure: it must never end up in the operator's build.

use std::process::Command;

#[test]
fn kubesim_is_not_in_the_operators_dependency_tree() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "tree",
            "--manifest-path",
            manifest,
            "-p",
            "tiermq-operator",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("run cargo tree");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let packages: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // The check is only meaningful if the tree was really listed.
    assert!(
        packages.contains(&"tiermq-operator"),
        "unexpected cargo tree output:\n{text}"
    );
    assert!(
        packages.contains(&"kube"),
        "the operator should depend on kube:\n{text}"
    );
    assert!(
        !packages.contains(&"kubesim"),
        "kubesim is in the operator's dependency tree:\n{text}"
    );
}
