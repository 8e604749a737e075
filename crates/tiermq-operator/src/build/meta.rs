//! Metadata every built object shares: owner references, namespace, labels, and reading values
//! back from Secrets.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use tiermq_crd::ClusterKind;

use super::{BuildError, Secret};

/// A controller owner reference to `owner` (`controller` and `blockOwnerDeletion` set).
pub fn owner_reference<K>(owner: &K) -> Result<OwnerReference, BuildError>
where
    K: Resource<DynamicType = ()>,
{
    let name = owner.name_any();
    let uid = owner.meta().uid.clone().ok_or(BuildError::MissingField {
        kind: kind_str::<K>(),
        name: name.clone(),
        field: "metadata.uid",
    })?;
    Ok(OwnerReference {
        api_version: K::api_version(&()).to_string(),
        kind: K::kind(&()).to_string(),
        name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

pub(crate) fn kind_str<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()).as_ref() {
        "RabbitMQInstance" => "RabbitMQInstance",
        "SharedCluster" => "SharedCluster",
        _ => "object",
    }
}

pub(crate) fn namespace_of<K>(obj: &K) -> Result<String, BuildError>
where
    K: Resource<DynamicType = ()>,
{
    obj.namespace().ok_or(BuildError::MissingField {
        kind: kind_str::<K>(),
        name: obj.name_any(),
        field: "metadata.namespace",
    })
}

pub(crate) fn object_meta(
    name: String,
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: &OwnerReference,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

pub(crate) fn kind_label(kind: ClusterKind) -> &'static str {
    match kind {
        ClusterKind::Shared => "shared",
        ClusterKind::Dedicated => "dedicated",
    }
}

/// A non-empty UTF-8 value of `key` in a Secret's `data` (or `stringData`, as written by hand).
pub(crate) fn read_key(secret: &k8s_openapi::api::core::v1::Secret, key: &str) -> Option<Secret> {
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok());
    let from_string_data = || {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(key))
            .cloned()
    };
    from_data
        .or_else(from_string_data)
        .filter(|v| !v.is_empty())
        .map(Secret::new)
}
