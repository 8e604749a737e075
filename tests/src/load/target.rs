//! Where the load goes: an AMQP URI on a loopback address, and the errors of getting there.

use std::fmt;
use std::net::Ipv4Addr;

/// Why a load could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "AMQP target {host:?} is not a 127.0.0.0/8 address; the load generator only loads loopback brokers"
    )]
    NotLoopback { host: String },
    #[error("AMQP URI is not usable ({reason}); expected amqp://user:pass@127.x.y.z:5672/vhost")]
    BadUri { reason: String },
    #[error("declaring queue {queue:?} through {target} failed: {reason}")]
    Declare {
        queue: String,
        target: String,
        reason: String,
    },
    /// Declaring a pattern's exchanges, queues or bindings failed.
    #[error("setting up pattern {pattern} through {target} failed at {step}: {reason}")]
    Topology {
        pattern: String,
        target: String,
        step: String,
        reason: String,
    },
}

/// An AMQP URI with credentials. `Debug`/`Display` show only the host part.
#[derive(Clone)]
pub struct AmqpTarget {
    uri: String,
    host: String,
}

impl AmqpTarget {
    /// `amqp://user:pass@host:port/vhost` (user, password and vhost percent-encoded by the caller
    /// or by [`AmqpTarget::from_parts`]). Refuses hosts outside `127.0.0.0/8`.
    pub fn new(uri: impl Into<String>) -> Result<Self, LoadError> {
        let uri = uri.into();
        let rest = uri
            .strip_prefix("amqp://")
            .ok_or_else(|| LoadError::BadUri {
                reason: "scheme must be amqp://".into(),
            })?;
        let authority = rest.split('/').next().unwrap_or_default();
        let hostport = authority.rsplit('@').next().unwrap_or_default();
        let host = hostport.split(':').next().unwrap_or_default().to_string();
        let hostport = hostport.to_string();
        let ip: Ipv4Addr = host
            .parse()
            .map_err(|_| LoadError::NotLoopback { host: host.clone() })?;
        if !ip.is_loopback() {
            return Err(LoadError::NotLoopback { host });
        }
        Ok(AmqpTarget {
            uri,
            host: hostport,
        })
    }

    /// Builds the URI from its parts, percent-encoding user, password and vhost.
    pub fn from_parts(
        host: &str,
        port: u16,
        vhost: &str,
        user: &str,
        password: &str,
    ) -> Result<Self, LoadError> {
        Self::new(format!(
            "amqp://{}:{}@{host}:{port}/{}",
            encode(user),
            encode(password),
            encode(vhost)
        ))
    }

    /// `host:port`, safe to print.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The full URI with credentials: only for opening connections, never for output.
    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    /// [`Self::uri`] asking for the smallest AMQP frames (8 KiB). lapin zero-fills two buffers of
    /// 32 frames per connection, 8 MiB at the broker's usual 128 KiB frames; load clients send
    /// small messages (larger bodies are split into frames), and the scale bench opens hundreds.
    pub(crate) fn uri_small_frames(&self) -> String {
        let sep = if self.uri.contains('?') { '&' } else { '?' };
        format!("{}{sep}frame_max=8192", self.uri)
    }
}

impl fmt::Debug for AmqpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpTarget({})", self.host)
    }
}

impl fmt::Display for AmqpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "amqp://{}", self.host)
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(AmqpTarget::new("amqp://u:p@127.20.3.4:5672/v").is_ok());
        let t = AmqpTarget::new("amqp://u:p@127.20.3.4:5672/v").unwrap();
        assert_eq!(
            t.uri_small_frames(),
            "amqp://u:p@127.20.3.4:5672/v?frame_max=8192"
        );
        let t = AmqpTarget::new("amqp://u:p@127.20.3.4:5672/v?heartbeat=5").unwrap();
        assert!(
            t.uri_small_frames()
                .ends_with("?heartbeat=5&frame_max=8192")
        );
        let e = AmqpTarget::new("amqp://u:p@10.0.0.1:5672/v").unwrap_err();
        assert!(matches!(e, LoadError::NotLoopback { .. }), "{e}");
        let e = AmqpTarget::new("amqp://u:p@example:5672/v").unwrap_err();
        assert!(matches!(e, LoadError::NotLoopback { .. }), "{e}");
        assert!(AmqpTarget::new("http://127.0.0.1/").is_err());
    }

    #[test]
    fn debug_and_display_hide_the_password() {
        let t = AmqpTarget::from_parts(
            "127.20.1.1",
            5672,
            "team-a.orders",
            "team-a.orders",
            "s3cr:et/",
        )
        .unwrap();
        assert!(!format!("{t:?} {t}").contains("s3cr"));
        assert!(t.uri().contains("s3cr%3Aet%2F"));
        assert!(t.uri().ends_with("/team-a.orders"));
    }
}
