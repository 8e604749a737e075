//! `kubesim up` runs a cluster that real kubectl can use, logs its requests where
//! `--request-log` says, and stops cleanly on SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn kubesim_up_serves_kubectl_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("requests.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .args(["up", "--dir"])
        .arg(&state)
        .arg("--request-log")
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kubeconfig = state.join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut out = None;
    while Instant::now() < deadline {
        if kubeconfig.exists() {
            let o = Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["get", "namespaces", "-o", "name"])
                .output()
                .unwrap();
            if o.status.success() {
                out = Some(String::from_utf8_lossy(&o.stdout).into_owned());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("kubesim did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = out.expect("kubectl never reached the kubesim API server");
    assert!(out.lines().any(|l| l == "namespace/default"), "{out}");
    assert!(status.success(), "kubesim exited with {status}");
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut printed).unwrap();
    assert!(
        printed.contains(&format!("export KUBECONFIG={}", kubeconfig.display())),
        "{printed}"
    );
    assert!(printed.contains("kubesim stopped"), "{printed}");
    let records = kubesim::apiserver::RequestLog::read_file(&log).unwrap();
    assert!(
        records.iter().any(|r| r.user == "kubernetes-admin"
            && r.verb == "list"
            && r.resource == "namespaces"
            && r.code == 200),
        "kubectl's list is in the request log"
    );
}
