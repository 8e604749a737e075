//! The cluster's admin Secret: the administrator the operator uses on the management API.
//!
//! The pods create this user at first boot from `RABBITMQ_DEFAULT_USER`/`RABBITMQ_DEFAULT_PASS`,
//! so the password is created once and never regenerated (apply reads it back with
//! [`read_admin`]).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use super::{BrokerCluster, admin_secret_name};

/// The Secret key holding the administrator's user name.
pub const KEY_USERNAME: &str = "username";
/// The Secret key holding the administrator's password.
pub const KEY_PASSWORD: &str = "password";

/// The administrator's user name on every cluster the operator runs.
pub const ADMIN_USERNAME: &str = "tiermq-admin";

/// An administrator's login as read from the Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminCredentials {
    /// The administrator's user name.
    pub username: String,
    /// The administrator's password.
    pub password: tiermq_broker::Secret,
}

/// The admin Secret `<cluster>-admin` (type `kubernetes.io/basic-auth`) with [`ADMIN_USERNAME`]
/// and `password`.
pub fn build(c: &BrokerCluster, password: &tiermq_broker::Secret) -> Secret {
    Secret {
        metadata: c.meta(admin_secret_name(&c.name)),
        type_: Some("kubernetes.io/basic-auth".into()),
        data: Some(BTreeMap::from([
            (
                KEY_USERNAME.to_string(),
                ByteString(ADMIN_USERNAME.as_bytes().to_vec()),
            ),
            (KEY_PASSWORD.to_string(), super::secret_bytes(password)),
        ])),
        ..Secret::default()
    }
}

/// The login held by an existing admin Secret.
pub fn read_admin(secret: &Secret) -> Option<AdminCredentials> {
    Some(AdminCredentials {
        username: super::read_key(secret, KEY_USERNAME)?.expose().to_string(),
        password: super::read_key(secret, KEY_PASSWORD)?,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn admin_secret_is_basic_auth_and_round_trips() {
        let pw = tiermq_broker::Secret::new("s3cret");
        let s = build(&dedicated(), &pw);
        assert_eq!(s.metadata.name.as_deref(), Some("orders-dedicated-admin"));
        assert_owned(&s.metadata, "RabbitMQInstance", "orders");
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/basic-auth"));
        let creds = read_admin(&s).unwrap();
        assert_eq!(creds.username, ADMIN_USERNAME);
        assert_eq!(creds.password, pw);
        assert!(!format!("{creds:?}").contains("s3cret"));
    }

    #[test]
    fn a_secret_without_password_reads_as_none() {
        let mut s = build(&dedicated(), &tiermq_broker::Secret::new("x"));
        s.data.as_mut().unwrap().remove(KEY_PASSWORD);
        assert_eq!(read_admin(&s), None);
    }
}
