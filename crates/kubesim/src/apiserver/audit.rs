//! The request log: one record per request, kept in memory (the last [`MEMORY_RECORDS`]) and,
//! when configured, appended to a file as one JSON line each.
//!
//! A line looks like
//!
//! ```json
//! {"time":"2026-01-01T10:00:00.123456Z","user":"system:serviceaccount:tiermq:operator",
//!  "groups":["system:serviceaccounts","system:serviceaccounts:tiermq","system:authenticated"],
//!  "credentialId":"JTI=...","verb":"patch","apiGroup":"apps","apiVersion":"v1",
//!  "resource":"statefulsets","subresource":"","namespace":"t","name":"web",
//!  "uri":"/apis/apps/v1/namespaces/t/statefulsets/web?fieldManager=x","code":200}
//! ```
//!
//! - `time` is when the request arrived; `user`, `groups` and `credentialId` who sent it (the
//!   authenticated identity; `impersonatedUser` is added when it acted as someone else);
//! - `verb` is the verb RBAC sees (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
//!   `deletecollection`; the lower-case HTTP method for non-resource URLs, whose `path` is set
//!   instead of `resource`);
//! - `code` is the HTTP status answered (a watch is logged when its stream starts). A request
//!   that a client fault stopped (see [`super::client_faults`]) has `fault` set (`refuse`,
//!   `hang`, `error`); refused and hung requests got no answer and have `code` 0.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How many records stay in memory (older ones are dropped; the file keeps everything).
pub const MEMORY_RECORDS: usize = 100_000;

/// One request, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// When the request arrived.
    pub time: DateTime<Utc>,
    /// The authenticated user (`system:anonymous` without credentials).
    pub user: String,
    /// Its groups.
    pub groups: Vec<String>,
    /// The credential's id (`JTI=...` for ServiceAccount tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    /// The user the request acted as, when it impersonated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonated_user: Option<String>,
    /// The verb as RBAC sees it.
    pub verb: String,
    /// API group ("" for core).
    pub api_group: String,
    /// API version.
    pub api_version: String,
    /// Resource (plural); empty for non-resource requests.
    pub resource: String,
    /// Subresource (`status`, `scale`, `token`); empty for none.
    pub subresource: String,
    /// Namespace; empty for cluster scope.
    pub namespace: String,
    /// Object name; empty for collections and creates.
    pub name: String,
    /// The non-resource URL path; empty for resource requests.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Path and query as sent.
    pub uri: String,
    /// HTTP status code answered; 0 when no answer was sent.
    pub code: u16,
    /// The client fault that stopped the request, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// The client's User-Agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_agent: String,
}

impl RequestRecord {
    /// Whether the request asked to change something (create, update, patch, delete,
    /// deletecollection).
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }
}

/// The server's request log; shared by every request.
pub struct RequestLog {
    file: Option<(PathBuf, Mutex<std::fs::File>)>,
    memory: Mutex<VecDeque<RequestRecord>>,
}

impl RequestLog {
    /// A log kept in memory and, with `path`, appended to that file (created if missing).
    pub fn new(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?;
                Some((p.to_path_buf(), Mutex::new(f)))
            }
            None => None,
        };
        Ok(RequestLog {
            file,
            memory: Mutex::default(),
        })
    }

    /// The file the log is written to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(p, _)| p.as_path())
    }

    /// Records one request.
    pub fn record(&self, r: RequestRecord) {
        if let Some((path, f)) = &self.file {
            let mut line = serde_json::to_string(&r).expect("records serialise");
            line.push('\n');
            // one write per line, so lines never interleave
            if let Err(e) = f
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write_all(line.as_bytes())
            {
                tracing::warn!("cannot write the request log {}: {e}", path.display());
            }
        }
        let mut m = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() == MEMORY_RECORDS {
            m.pop_front();
        }
        m.push_back(r);
    }

    /// The records in memory, oldest first.
    pub fn records(&self) -> Vec<RequestRecord> {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The records in memory of requests `user` sent, oldest first.
    pub fn records_of(&self, user: &str) -> Vec<RequestRecord> {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r.user == user)
            .cloned()
            .collect()
    }

    /// Reads a request log file written by [`RequestLog`] (for out-of-process tests).
    pub fn read_file(path: &Path) -> anyhow::Result<Vec<RequestRecord>> {
        let text = std::fs::read_to_string(path)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .map_err(|e| anyhow::anyhow!("bad request log line {l:?}: {e}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_go_to_memory_and_file_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/requests.log");
        let log = RequestLog::new(Some(&path)).unwrap();
        let r = RequestRecord {
            time: Utc::now(),
            user: "u".into(),
            groups: vec!["system:authenticated".into()],
            credential_id: None,
            impersonated_user: None,
            verb: "get".into(),
            api_group: "".into(),
            api_version: "v1".into(),
            resource: "pods".into(),
            subresource: "".into(),
            namespace: "ns".into(),
            name: "x".into(),
            path: "".into(),
            uri: "/api/v1/namespaces/ns/pods/x".into(),
            code: 200,
            fault: None,
            user_agent: "".into(),
        };
        log.record(r.clone());
        log.record(RequestRecord {
            user: "v".into(),
            ..r.clone()
        });
        assert_eq!(log.records().len(), 2);
        assert_eq!(log.records_of("u"), vec![r.clone()]);
        let lines = RequestLog::read_file(&path).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], r);
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(raw.starts_with("{\"time\":"), "{raw}");
        assert!(raw.contains("\"apiGroup\":\"\""), "{raw}");
    }
}
