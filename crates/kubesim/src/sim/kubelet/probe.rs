//! Container probes as the kubelet runs them: `httpGet` (a plain HTTP/1.1 GET with the probe's
//! headers and `User-Agent: kube-probe/<version>`; 200–399 passes) and `tcpSocket` (the port
//! accepts a connection), each within `timeoutSeconds`, every `periodSeconds` after
//! `initialDelaySeconds`, with `successThreshold` and `failureThreshold` deciding when the verdict
//! changes. Ports may be numbers or the names of the container's ports; the host is the pod IP
//! unless the probe names one.
//!
//! Not run: `exec` (kubesim cannot enter the container to run a command), `grpc` and HTTPS
//! `httpGet` (the kubelet reports these once with a Warning Event `ProbeNotSupported` and
//! treats them as passing).

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Which probe: they differ in their starting verdict and in what a failure does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Holds the other probes until it passes once; failing kills the container.
    Startup,
    /// Failing `failureThreshold` times in a row kills the container (it is restarted).
    Liveness,
    /// Gates the container's `ready` (and so the pod's Ready condition).
    Readiness,
}

impl ProbeKind {
    /// `Startup`, `Liveness`, `Readiness`, as Events name them.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// One probe of one container run, with its counters.
pub struct Prober {
    /// Which probe this is.
    pub kind: ProbeKind,
    probe: Probe,
    next: Instant,
    successes: i32,
    failures: i32,
    /// The current verdict: liveness starts passing, startup and readiness start failing.
    pub passing: bool,
}

/// What one probe run gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRun {
    /// The error when it failed.
    pub failure: Option<String>,
    /// The verdict changed with this run.
    pub changed: bool,
}

fn secs(v: Option<i32>, default: i32) -> Duration {
    Duration::from_secs(u64::try_from(v.unwrap_or(default).max(0)).unwrap_or(0))
}

impl Prober {
    /// The container's `kind` probe, if it declares one; the first run is due
    /// `initialDelaySeconds` after `started`.
    pub fn of(kind: ProbeKind, c: &Container, started: Instant) -> Option<Prober> {
        let probe = match kind {
            ProbeKind::Startup => c.startup_probe.clone(),
            ProbeKind::Liveness => c.liveness_probe.clone(),
            ProbeKind::Readiness => c.readiness_probe.clone(),
        }?;
        let next = started + secs(probe.initial_delay_seconds, 0);
        Some(Prober {
            kind,
            probe,
            next,
            successes: 0,
            failures: 0,
            passing: kind == ProbeKind::Liveness,
        })
    }

    /// Why kubesim cannot run this probe, if it cannot (it then always passes).
    pub fn unsupported(&self) -> Option<String> {
        let p = &self.probe;
        if p.exec.is_some() {
            Some("exec probes cannot run in kubesim (no container to enter)".into())
        } else if p.grpc.is_some() {
            Some("gRPC probes are not run by kubesim".into())
        } else if p
            .http_get
            .as_ref()
            .is_some_and(|h| h.scheme.as_deref() == Some("HTTPS"))
        {
            Some("HTTPS probes are not run by kubesim".into())
        } else {
            None
        }
    }

    /// Failed runs since the last success.
    pub fn consecutive_failures(&self) -> i32 {
        self.failures
    }

    /// Whether a run is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// Runs the probe against the container at `ip` and updates the verdict.
    pub async fn run(&mut self, c: &Container, ip: Ipv4Addr) -> ProbeRun {
        self.next = Instant::now() + secs(self.probe.period_seconds, 10);
        let result = if self.unsupported().is_some() {
            Ok(())
        } else {
            let timeout = secs(self.probe.timeout_seconds, 1);
            match tokio::time::timeout(timeout, act(&self.probe, c, ip)).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "{} (Client.Timeout exceeded while awaiting headers)",
                    target(&self.probe, c, ip)
                )),
            }
        };
        let before = self.passing;
        match &result {
            Ok(()) => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.probe.success_threshold.unwrap_or(1).max(1) {
                    self.passing = true;
                }
            }
            Err(_) => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= self.probe.failure_threshold.unwrap_or(3).max(1) {
                    self.passing = false;
                }
            }
        }
        ProbeRun {
            failure: result.err(),
            changed: before != self.passing,
        }
    }
}

fn port(p: &IntOrString, c: &Container) -> Option<u16> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    }
}

/// What the probe talks to, for messages.
fn target(p: &Probe, c: &Container, ip: Ipv4Addr) -> String {
    if let Some(h) = &p.http_get {
        let host = h.host.clone().unwrap_or_else(|| ip.to_string());
        let port = port(&h.port, c).map_or_else(|| "?".into(), |p| p.to_string());
        format!(
            "Get \"http://{host}:{port}{}\"",
            h.path.as_deref().unwrap_or("/")
        )
    } else if let Some(t) = &p.tcp_socket {
        let host = t.host.clone().unwrap_or_else(|| ip.to_string());
        let port = port(&t.port, c).map_or_else(|| "?".into(), |p| p.to_string());
        format!("dial tcp {host}:{port}")
    } else {
        "probe".into()
    }
}

async fn act(p: &Probe, c: &Container, ip: Ipv4Addr) -> Result<(), String> {
    if let Some(h) = &p.http_get {
        let host = h.host.clone().unwrap_or_else(|| ip.to_string());
        let Some(port) = port(&h.port, c) else {
            return Err(format!(
                "httpGet port {:?} is not a port of the container",
                h.port
            ));
        };
        let path = h.path.as_deref().unwrap_or("/");
        let what = target(p, c, ip);
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("{what}: dial tcp {host}:{port}: connect: {e}"))?;
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for hdr in h.http_headers.iter().flatten() {
            req.push_str(&format!("{}: {}\r\n", hdr.name, hdr.value));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = s
                .read(&mut chunk)
                .await
                .map_err(|e| format!("{what}: {e}"))?;
            if n == 0 {
                return Err(format!("{what}: EOF"));
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > 64 * 1024 {
                break;
            }
        }
        let line = String::from_utf8_lossy(&buf);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("{what}: malformed HTTP response"))?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    } else if let Some(t) = &p.tcp_socket {
        let host = t.host.clone().unwrap_or_else(|| ip.to_string());
        let Some(port) = port(&t.port, c) else {
            return Err(format!(
                "tcpSocket port {:?} is not a port of the container",
                t.port
            ));
        };
        tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map(|_| ())
            .map_err(|e| format!("dial tcp {host}:{port}: connect: {e}"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(probe: serde_json::Value) -> Container {
        serde_json::from_value(json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 0}],
            "readinessProbe": probe,
            "livenessProbe": probe,
        }))
        .unwrap()
    }

    /// An HTTP server on 127.0.0.1 answering every request with `code`.
    async fn server(code: u16) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_3xx_and_verdicts_follow_the_thresholds() {
        let ok = server(200).await;
        let bad = server(503).await;
        let ip = Ipv4Addr::LOCALHOST;
        let c = container(json!({"httpGet": {"path": "/readyz", "port": ok}, "periodSeconds": 1}));
        let mut r = Prober::of(ProbeKind::Readiness, &c, Instant::now()).unwrap();
        assert!(!r.passing);
        let run = r.run(&c, ip).await;
        assert_eq!(
            run,
            ProbeRun {
                failure: None,
                changed: true
            }
        );
        assert!(r.passing);

        let c = container(json!({"httpGet": {"path": "/healthz", "port": bad},
                                  "failureThreshold": 2}));
        let mut l = Prober::of(ProbeKind::Liveness, &c, Instant::now()).unwrap();
        assert!(l.passing);
        let first = l.run(&c, ip).await;
        assert!(
            !first.changed && l.passing,
            "one failure is below the threshold"
        );
        assert_eq!(
            first.failure.as_deref(),
            Some("HTTP probe failed with statuscode: 503")
        );
        assert!(l.run(&c, ip).await.changed && !l.passing);

        let c = container(json!({"tcpSocket": {"port": 1}}));
        let mut t = Prober::of(ProbeKind::Readiness, &c, Instant::now()).unwrap();
        let run = t.run(&c, ip).await;
        assert!(run.failure.unwrap().starts_with("dial tcp 127.0.0.1:1"));

        let c = container(json!({"exec": {"command": ["true"]}}));
        let mut e = Prober::of(ProbeKind::Readiness, &c, Instant::now()).unwrap();
        assert!(e.unsupported().is_some());
        assert!(e.run(&c, ip).await.changed && e.passing);
    }
}
