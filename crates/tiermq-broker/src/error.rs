use std::fmt;

/// A failed broker operation: which cluster, what was being done, and what went wrong.
///
/// Texts never contain passwords: the client redacts its own credentials, any secret sent in the
/// request, and every `scheme://user:password@` from broker answers before building one.
#[derive(Debug, thiserror::Error)]
#[error("cluster {cluster}: {operation}: {kind}")]
pub struct BrokerError {
    /// The cluster's name as the client was configured (for example `shared/default`).
    pub cluster: String,
    /// What was being done, with the names involved: `create vhost "orders"`.
    pub operation: String,
    /// What went wrong.
    pub kind: ErrorKind,
}

/// What went wrong, with enough to decide what to do next.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No answer: connection refused, DNS, timeout. Transient: retried.
    Unreachable {
        /// The management API's URL, with any credentials removed.
        url: String,
        /// The HTTP client's error and its causes, redacted.
        detail: String,
    },
    /// 401/403 from the management API: wrong admin credentials or missing tag. Permanent.
    Unauthorized {
        /// The HTTP status, 401 or 403.
        status: u16,
        /// The user the client logged in as.
        user: String,
    },
    /// 404: the named object does not exist. Permanent.
    NotFound,
    /// Another 4xx: the request was refused; `reason` is the broker's text. Permanent, except
    /// 408 and 429, which are retried.
    Client {
        /// The HTTP status.
        status: u16,
        /// The broker's explanation, redacted.
        reason: String,
    },
    /// 5xx: the broker failed. Transient: retried.
    Server {
        /// The HTTP status.
        status: u16,
        /// The broker's explanation, redacted.
        reason: String,
    },
    /// The answer was not what the management API documents.
    InvalidResponse {
        /// What did not match (usually the decoding error).
        detail: String,
    },
    /// Refused before anything was sent: a name that cannot be addressed, a document over the
    /// size limit, a malformed definitions document. Nothing was changed on the broker.
    InvalidInput {
        /// What is wrong with the input.
        reason: String,
    },
    /// The destination holds an object that differs from the source's (a queue with other
    /// arguments): RabbitMQ's import keeps the existing one silently, so the copy verifies and
    /// reports it. Permanent until someone removes or fixes the object.
    Conflict {
        /// Which object differs, and how.
        reason: String,
    },
    /// A step refused to act because it would lose messages or state (for example retiring a
    /// tenant whose vhost still holds messages). Nothing was changed.
    Refused {
        /// What would have been lost.
        reason: String,
    },
}

impl ErrorKind {
    /// Worth retrying with backoff: the same request may succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            ErrorKind::Unreachable { .. } | ErrorKind::Server { .. } => true,
            ErrorKind::Client { status, .. } => *status == 408 || *status == 429,
            ErrorKind::Unauthorized { .. }
            | ErrorKind::NotFound
            | ErrorKind::InvalidResponse { .. }
            | ErrorKind::InvalidInput { .. }
            | ErrorKind::Conflict { .. }
            | ErrorKind::Refused { .. } => false,
        }
    }

    /// A short, stable name for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            ErrorKind::Unreachable { .. } => "Unreachable",
            ErrorKind::Unauthorized { .. } => "Unauthorized",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Client { .. } => "ClientError",
            ErrorKind::Server { .. } => "ServerError",
            ErrorKind::InvalidResponse { .. } => "InvalidResponse",
            ErrorKind::InvalidInput { .. } => "InvalidInput",
            ErrorKind::Conflict { .. } => "Conflict",
            ErrorKind::Refused { .. } => "Refused",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Unreachable { url, detail } => write!(
                f,
                "management API at {url} is unreachable ({detail}); check that the broker runs and \
                 the address is right"
            ),
            ErrorKind::Unauthorized { status, user } => write!(
                f,
                "HTTP {status}: the management API refused user {user:?}; check the cluster's admin \
                 credentials and that the user has the administrator tag"
            ),
            ErrorKind::NotFound => write!(f, "does not exist (HTTP 404)"),
            ErrorKind::Client { status, reason } => {
                write!(f, "refused with HTTP {status}: {reason}")
            }
            ErrorKind::Server { status, reason } => {
                write!(f, "broker failed with HTTP {status}: {reason}")
            }
            ErrorKind::InvalidResponse { detail } => write!(f, "unexpected answer: {detail}"),
            ErrorKind::InvalidInput { reason } => {
                write!(f, "invalid input, nothing sent: {reason}")
            }
            ErrorKind::Conflict { reason } => write!(f, "conflict: {reason}"),
            ErrorKind::Refused { reason } => write!(f, "refused, nothing changed: {reason}"),
        }
    }
}

impl BrokerError {
    /// Worth retrying with backoff (see [`ErrorKind::is_transient`]).
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// The named object does not exist (HTTP 404).
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, ErrorKind::NotFound)
    }
}

/// `Ok(None)` for a 404, so "absent" reads as data where absence is an answer.
pub trait NotFoundExt<T> {
    /// `Ok(Some(v))` for success, `Ok(None)` for a 404, the error otherwise.
    fn optional(self) -> Result<Option<T>, BrokerError>;
}

impl<T> NotFoundExt<T> for Result<T, BrokerError> {
    fn optional(self) -> Result<Option<T>, BrokerError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_for(status: u16) -> ErrorKind {
        crate::client::classify_status(status, "reason".into(), "admin")
    }

    #[test]
    fn statuses_map_to_kinds_and_transience() {
        assert!(matches!(kind_for(401), ErrorKind::Unauthorized { .. }));
        assert!(matches!(kind_for(403), ErrorKind::Unauthorized { .. }));
        assert!(matches!(kind_for(404), ErrorKind::NotFound));
        assert!(matches!(
            kind_for(400),
            ErrorKind::Client { status: 400, .. }
        ));
        let missing_vhost = crate::client::classify_status(400, "vhost_not_found".into(), "admin");
        assert_eq!(missing_vhost, ErrorKind::NotFound);
        assert!(matches!(
            kind_for(503),
            ErrorKind::Server { status: 503, .. }
        ));
        for s in [400, 401, 403, 404, 405, 409, 413, 415] {
            assert!(!kind_for(s).is_transient(), "{s} must not be retried");
        }
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(kind_for(s).is_transient(), "{s} must be retried");
        }
        let unreachable = ErrorKind::Unreachable {
            url: "http://x".into(),
            detail: "refused".into(),
        };
        assert!(unreachable.is_transient());
    }

    #[test]
    fn texts_name_the_cluster_and_the_operation() {
        let e = BrokerError {
            cluster: "shared/default".into(),
            operation: "create vhost \"orders\"".into(),
            kind: kind_for(401),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("cluster shared/default: create vhost \"orders\": HTTP 401"),
            "{text}"
        );
        assert!(text.contains("admin credentials"), "{text}");
    }
}
