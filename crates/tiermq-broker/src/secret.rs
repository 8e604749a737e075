//! Secret values (passwords, Erlang cookies, URIs with credentials): never shown by
//! `Debug`/`Display`, and scrubbed from any text that reaches an error or a log line. The one
//! secret type and the one generator of the project; the operator uses them too.

use std::fmt;

use rand::Rng;
use rand::distr::{Alphanumeric, SampleString};

/// A secret string (a password, an Erlang cookie, or an AMQP URI with a password in it).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from somewhere safe (a Secret object, a generator).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send or store it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Secret::new(s)
    }
}

/// Length of generated secret values: 32 alphanumerics are about 190 bits.
pub const GENERATED_LEN: usize = 32;

/// A new random value from `rng`: [`GENERATED_LEN`] ASCII letters and digits, valid as a
/// password, an Erlang cookie, in `rabbitmq.conf` and in URIs without escaping.
pub fn generate_secret(rng: &mut impl Rng) -> Secret {
    Secret(Alphanumeric.sample_string(rng, GENERATED_LEN))
}

/// A new random password from the thread's cryptographically secure generator.
pub fn generate_password() -> Secret {
    generate_secret(&mut rand::rng())
}

/// Returns `text` with every given secret and the password part of every `scheme://user:pass@`
/// replaced by `<redacted>`. Used on broker answers before they become error texts, since the
/// management API may echo a request (for example a shovel's URI) back in its error reason.
pub fn redact(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.0.len() >= 4 {
            out = out.replace(&s.0, "<redacted>");
        }
    }
    redact_uri_passwords(&out)
}

fn redact_uri_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first '/', whitespace or quote; userinfo ends at its last '@'.
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'' || c == ',')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":<redacted>");
                out.push_str(&authority[at..]);
                rest = &tail[end..];
            }
            // No userinfo here: scan on from just after this "://", since another URI may start
            // inside what looked like this one's authority (as in "://amqp://u:p@h").
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn generated_passwords_are_long_random_and_uri_safe() {
        let a = generate_password();
        let b = generate_password();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn uri_passwords_and_known_secrets_are_scrubbed() {
        let text = r#"{"reason":"bad uri amqp://alice:s3cr3t@10.0.0.1:5672/%2F and amqp://bob@h/v, also pw=topsecret"}"#;
        let out = redact(text, &[&Secret::new("topsecret")]);
        assert!(!out.contains("s3cr3t"), "{out}");
        assert!(!out.contains("topsecret"), "{out}");
        assert!(
            out.contains("amqp://alice:<redacted>@10.0.0.1:5672/%2F"),
            "{out}"
        );
        assert!(out.contains("amqp://bob@h/v"), "{out}");
    }

    #[test]
    fn a_uri_right_after_a_stray_scheme_separator_is_scrubbed() {
        // Found by the property below: the stray "://" once swallowed the real URI's scheme.
        let out = redact("://amqp://a:s3cr3tpassword@0:5672/v", &[]);
        assert_eq!(out, "://amqp://a:<redacted>@0:5672/v");
    }

    proptest::proptest! {
        #[test]
        fn no_generated_password_survives_redaction(user in "[a-z]{1,8}", host in "[a-z0-9.]{1,12}", prefix in ".{0,20}", suffix in ".{0,20}") {
            let pw = generate_password();
            let text = format!("{prefix}amqp://{user}:{}@{host}:5672/v{suffix}", pw.expose());
            let out = redact(&text, &[]);
            proptest::prop_assert!(!out.contains(pw.expose()), "{}", out);
        }
    }
}
