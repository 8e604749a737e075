//! The cluster's Erlang-cookie Secret: nodes that share the cookie may form one cluster.
//!
//! Created once from [`super::generate_secret`]; a changed cookie would split the cluster,
//! so apply reads an existing one back with [`read_cookie`] and never replaces it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use super::{BrokerCluster, erlang_cookie_secret_name};

/// The Secret key holding the cookie (copied into each broker's `.erlang.cookie` by an init
/// container, see [`super::statefulset`]).
pub const KEY_COOKIE: &str = "cookie";

/// The Opaque Secret `<cluster>-erlang-cookie` holding `cookie` under [`KEY_COOKIE`].
pub fn build(c: &BrokerCluster, cookie: &tiermq_broker::Secret) -> Secret {
    Secret {
        metadata: c.meta(erlang_cookie_secret_name(&c.name)),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            KEY_COOKIE.to_string(),
            super::secret_bytes(cookie),
        )])),
        immutable: Some(true),
        ..Secret::default()
    }
}

/// The cookie of an existing Secret, if it holds a non-empty UTF-8 one.
pub fn read_cookie(secret: &Secret) -> Option<tiermq_broker::Secret> {
    super::read_key(secret, KEY_COOKIE)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn cookie_secret_is_immutable_and_round_trips() {
        let cookie = tiermq_broker::Secret::new("ABCdef123");
        let s = build(&shared(), &cookie);
        assert_eq!(s.metadata.name.as_deref(), Some("main-erlang-cookie"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("tiermq"));
        assert_owned(&s.metadata, "SharedCluster", "main");
        assert_eq!(s.immutable, Some(true));
        assert_eq!(s.data.as_ref().unwrap()[KEY_COOKIE].0, b"ABCdef123");
        assert_eq!(read_cookie(&s), Some(cookie));
        assert_eq!(read_cookie(&Secret::default()), None);
    }
}
