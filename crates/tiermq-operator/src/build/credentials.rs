//! The instance's credentials Secret `<instance>-credentials`, shaped for service binding
//! (type `servicebinding.io/rabbitmq`), and the `status.endpoint` that points at it.
//!
//! The tenant (vhost and user `<namespace>.<instance>`) and its password are the same on both
//! tiers, so the login never changes across a conversion. The password is generated once
//! ([`super::generate_secret`]) and read back afterwards ([`read_password`]). Only the `uri`
//! follows the clusters that serve the instance ([`transport_patch`]): it says AMQPS, and `ca.crt`
//! carries their CA, while every one of them has TLS. `port` stays the plain AMQP port, open on
//! every tier, so a client that builds its connection from host and port without TLS keeps
//! working when a cluster gains TLS.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use tiermq_crd::{EndpointStatus, RabbitMQInstance};

use super::{AMQP_PORT, AMQPS_PORT, BuildError, InstanceTarget, credentials_secret_name};

/// The service-binding Secret type for RabbitMQ.
pub const SECRET_TYPE: &str = "servicebinding.io/rabbitmq";
/// Secret key: the binding type, always `rabbitmq`.
pub const KEY_TYPE: &str = "type";
/// Secret key: the provider, always `tiermq`.
pub const KEY_PROVIDER: &str = "provider";
/// Secret key: the client Service's DNS name.
pub const KEY_HOST: &str = "host";
/// Secret key: the plain AMQP port (5672), open on every tier; the `uri` may say AMQPS.
pub const KEY_PORT: &str = "port";
/// Secret key: the tenant's vhost.
pub const KEY_VHOST: &str = "vhost";
/// Secret key: the tenant's user name (the same as the vhost).
pub const KEY_USERNAME: &str = "username";
/// Secret key: the tenant's password.
pub const KEY_PASSWORD: &str = "password";
/// Secret key: the full `amqp://` (or `amqps://`) URI, credentials included.
pub const KEY_URI: &str = "uri";
/// Secret key: the PEM CA bundle the serving brokers' certificates chain to; present only while
/// `uri` is `amqps://`.
pub const KEY_CA: &str = "ca.crt";

/// The credentials Secret `<instance>-credentials` for the instance's tenant and `password`.
pub fn build(
    instance: &RabbitMQInstance,
    password: &tiermq_broker::Secret,
) -> Result<Secret, BuildError> {
    let t = InstanceTarget::of(instance)?;
    let tenant = t.tenant();
    let host = t.host();
    let uri = amqp_uri(&tenant, password.expose(), &host, &tenant);
    let text = |s: &str| ByteString(s.as_bytes().to_vec());
    Ok(Secret {
        metadata: t.meta(credentials_secret_name(&t.name), &[]),
        type_: Some(SECRET_TYPE.into()),
        data: Some(BTreeMap::from([
            (KEY_TYPE.to_string(), text("rabbitmq")),
            (KEY_PROVIDER.to_string(), text("tiermq")),
            (KEY_HOST.to_string(), text(&host)),
            (KEY_PORT.to_string(), text(&AMQP_PORT.to_string())),
            (KEY_VHOST.to_string(), text(&tenant)),
            (KEY_USERNAME.to_string(), text(&tenant)),
            (KEY_PASSWORD.to_string(), super::secret_bytes(password)),
            (KEY_URI.to_string(), text(&uri)),
        ])),
        ..Secret::default()
    })
}

/// The tenant password held by an existing credentials Secret.
pub fn read_password(secret: &Secret) -> Option<tiermq_broker::Secret> {
    super::read_key(secret, KEY_PASSWORD)
}

/// `status.endpoint`: where clients connect and which Secret holds the login.
pub fn endpoint_status(instance: &RabbitMQInstance) -> Result<EndpointStatus, BuildError> {
    let t = InstanceTarget::of(instance)?;
    Ok(EndpointStatus {
        host: t.host(),
        port: AMQP_PORT,
        vhost: t.tenant(),
        secret_name: credentials_secret_name(&t.name),
    })
}

/// The merge patch that makes the Secret's `uri` and `ca.crt` say how to reach the instance now:
/// `amqps://…:5671` trusting `ca_bundle` when given (every cluster the Service routes to has
/// TLS), else `amqp://…:5672` without `ca.crt`. `None` when the Secret already says so, so a
/// steady instance writes nothing. The patch never carries the password or the user: a crash
/// between reading and writing cannot change the login.
pub fn transport_patch(
    instance: &RabbitMQInstance,
    secret: &Secret,
    password: &tiermq_broker::Secret,
    ca_bundle: Option<&[u8]>,
) -> Result<Option<serde_json::Value>, BuildError> {
    let t = InstanceTarget::of(instance)?;
    let tenant = t.tenant();
    let uri = match ca_bundle {
        Some(_) => amqps_uri(&tenant, password.expose(), &t.host(), &tenant),
        None => amqp_uri(&tenant, password.expose(), &t.host(), &tenant),
    };
    let wanted: [(&str, Option<&[u8]>); 2] = [(KEY_URI, Some(uri.as_bytes())), (KEY_CA, ca_bundle)];
    let data = secret.data.clone().unwrap_or_default();
    let mut patch = serde_json::Map::new();
    for (key, value) in wanted {
        if data.get(key).map(|b| b.0.as_slice()) != value {
            // Bytes serialize as base64 (cannot fail); `null` removes the key.
            let value = value.map(|v| ByteString(v.to_vec()));
            patch.insert(key.to_string(), serde_json::json!(value));
        }
    }
    Ok((!patch.is_empty()).then(|| serde_json::json!({ "data": patch })))
}

/// `amqp://user:pass@host:5672/vhost` with user, password and vhost percent-encoded.
pub fn amqp_uri(user: &str, password: &str, host: &str, vhost: &str) -> String {
    uri("amqp", AMQP_PORT, user, password, host, vhost)
}

/// `amqps://user:pass@host:5671/vhost`, encoded as [`amqp_uri`].
pub fn amqps_uri(user: &str, password: &str, host: &str, vhost: &str) -> String {
    uri("amqps", AMQPS_PORT, user, password, host, vhost)
}

fn uri(scheme: &str, port: i32, user: &str, password: &str, host: &str, vhost: &str) -> String {
    format!(
        "{scheme}://{}:{}@{host}:{port}/{}",
        percent_encode(user),
        percent_encode(password),
        percent_encode(vhost)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn text(s: &Secret, key: &str) -> String {
        String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn credentials_secret_has_the_service_binding_shape() {
        let i = instance("orders", "team-a");
        let pw = tiermq_broker::Secret::new("Pw123");
        let s = build(&i, &pw).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("orders-credentials"));
        assert_owned(&s.metadata, "RabbitMQInstance", "orders");
        assert_eq!(s.type_.as_deref(), Some("servicebinding.io/rabbitmq"));
        let keys: Vec<&str> = s
            .data
            .as_ref()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "host", "password", "port", "provider", "type", "uri", "username", "vhost"
            ]
        );
        assert_eq!(text(&s, "type"), "rabbitmq");
        assert_eq!(text(&s, "provider"), "tiermq");
        assert_eq!(text(&s, "host"), "orders.team-a.svc");
        assert_eq!(text(&s, "port"), "5672");
        assert_eq!(text(&s, "vhost"), "team-a.orders");
        assert_eq!(text(&s, "username"), "team-a.orders");
        assert_eq!(text(&s, "password"), "Pw123");
        assert_eq!(
            text(&s, "uri"),
            "amqp://team-a.orders:Pw123@orders.team-a.svc:5672/team-a.orders"
        );
        assert_eq!(read_password(&s), Some(pw));
    }

    #[test]
    fn the_secret_says_amqps_and_carries_the_ca_only_while_every_serving_cluster_has_tls() {
        let i = instance("orders", "team-a");
        let pw = tiermq_broker::Secret::new("Pw123");
        let mut s = build(&i, &pw).unwrap();
        // As created: plain, so nothing to change for a plain route.
        assert_eq!(transport_patch(&i, &s, &pw, None).unwrap(), None);
        let ca = b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
        let patch = transport_patch(&i, &s, &pw, Some(ca)).unwrap().unwrap();
        let data = patch["data"].as_object().unwrap();
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        // Never the login; the plain port stays for clients that build from host and port.
        assert_eq!(keys, ["ca.crt", "uri"]);
        // Apply it the way a merge patch would and ask again: nothing left to do.
        let stored = s.data.as_mut().unwrap();
        for (k, v) in data {
            let v: ByteString = serde_json::from_value(v.clone()).unwrap();
            stored.insert(k.clone(), v);
        }
        assert_eq!(text(&s, "port"), "5672");
        assert_eq!(
            text(&s, "uri"),
            "amqps://team-a.orders:Pw123@orders.team-a.svc:5671/team-a.orders"
        );
        assert_eq!(text(&s, "ca.crt").as_bytes(), ca);
        assert_eq!(transport_patch(&i, &s, &pw, Some(ca)).unwrap(), None);
        // Back to a plain cluster: plain again, and the CA key removed (null).
        let back = transport_patch(&i, &s, &pw, None).unwrap().unwrap();
        assert_eq!(back["data"]["ca.crt"], serde_json::Value::Null);
        let uri: ByteString = serde_json::from_value(back["data"]["uri"].clone()).unwrap();
        assert!(uri.0.starts_with(b"amqp://"));
    }

    #[test]
    fn uri_escapes_reserved_characters() {
        assert_eq!(
            amqp_uri("u@x", "p:/w%", "h.svc", "/"),
            "amqp://u%40x:p%3A%2Fw%25@h.svc:5672/%2F"
        );
    }

    #[test]
    fn endpoint_status_points_at_the_service_and_secret() {
        let e = endpoint_status(&instance("orders", "team-a")).unwrap();
        assert_eq!(
            e,
            EndpointStatus {
                host: "orders.team-a.svc".into(),
                port: 5672,
                vhost: "team-a.orders".into(),
                secret_name: "orders-credentials".into(),
            }
        );
    }
}
