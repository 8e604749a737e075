//! The `pods/{name}/log` subresource (`kubectl logs`). A real API server asks the pod's kubelet;
//! here the kubelet writes each run of a container to
//! `<pod logs root>/<ns>/<pod>-<uid>/logs/<container>/<restartCount>.log` and this handler reads
//! that file: the current run, or with `previous=true` the run before. `container`,
//! `tailLines` and `limitBytes` are honoured; `follow` answers with what is there now.

use std::collections::HashMap;
use std::path::PathBuf;

use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::Value;

use super::App;
use crate::apiserver::error::{ApiError, ApiResult};
use crate::apiserver::store;

/// Is this a request on a Pod's `log` subresource?
pub(super) fn is_pod_log(group: &str, plural: &str, sub: Option<&str>) -> bool {
    group.is_empty() && plural == "pods" && sub == Some("log")
}

/// The log file of `container` of pod `ns/pod` (uid `uid`) in its `run`-th run (its
/// `restartCount` when it started), below the folder the kubelet writes logs to.
pub fn log_file(
    root: &std::path::Path,
    ns: &str,
    pod: &str,
    uid: &str,
    container: &str,
    run: i64,
) -> PathBuf {
    root.join(ns)
        .join(format!("{pod}-{uid}"))
        .join("logs")
        .join(container)
        .join(format!("{run}.log"))
}

fn bad(msg: String) -> ApiError {
    ApiError::bad_request(msg)
}

/// Answers `GET .../pods/{name}/log` from the kubelet's log files.
pub(super) fn serve(
    app: &App,
    ns: &str,
    name: &str,
    params: &HashMap<String, String>,
) -> ApiResult<Response> {
    let pod = {
        let st = store::lock(&app.state);
        let rt = st
            .registry
            .get("", "v1", "pods")
            .cloned()
            .ok_or_else(|| ApiError::not_found("", "pods", name))?;
        st.get(&rt, Some(ns), name)?
    };
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match params.get("container") {
        Some(c) if containers.contains(&c.as_str()) => c.as_str(),
        Some(c) => {
            return Err(bad(format!("container {c} is not valid for pod {name}")));
        }
        None if containers.len() == 1 => containers[0],
        None => {
            return Err(bad(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let status = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == container)
        .cloned()
        .unwrap_or(Value::Null);
    let restarts = status["restartCount"].as_i64().unwrap_or(0);
    let previous = params.get("previous").is_some_and(|p| p == "true");
    let started = status["state"]["running"].is_object()
        || status["state"]["terminated"].is_object()
        || status["lastState"]["terminated"].is_object();
    if previous && restarts == 0 {
        return Err(bad(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    if !started {
        let reason = status["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or("ContainerCreating");
        return Err(bad(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    let root = app.pod_logs.as_ref().ok_or_else(|| {
        bad("this server keeps no container logs (no kubelet writes them)".into())
    })?;
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    // A container waiting in back-off has no current run yet: its last run is the newest log.
    let waiting = status["state"]["waiting"].is_object();
    let run = if previous || waiting {
        restarts - 1
    } else {
        restarts
    };
    let path = log_file(root, ns, name, uid, container, run.max(0));
    let mut text = std::fs::read(&path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    if let Some(n) = params
        .get("tailLines")
        .and_then(|n| n.parse::<usize>().ok())
    {
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        text = lines[start..].iter().map(|l| format!("{l}\n")).collect();
    }
    if let Some(n) = params
        .get("limitBytes")
        .and_then(|n| n.parse::<usize>().ok())
        && text.len() > n
    {
        let mut cut = n;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response())
}
