//! Instances: what the builders of an instance's own objects need ([`InstanceTarget`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use tiermq_crd::RabbitMQInstance;

use super::meta::{namespace_of, object_meta, owner_reference};
use super::names::{instance_service_name, service_host, tenant_name, validate_instance_name};
use super::{
    BuildError, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PART_OF, LABEL_TIERMQ_INSTANCE,
    MANAGED_BY,
};

/// The parts of a `RabbitMQInstance` the per-instance builders use.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceTarget {
    /// The instance's name.
    pub name: String,
    /// The instance's namespace, where its own objects live.
    pub namespace: String,
    /// The reference that makes the instance own its objects.
    pub owner: OwnerReference,
}

impl InstanceTarget {
    /// The parts of `instance` the builders use. Fails when it lacks a uid or namespace, or its
    /// name cannot carry the derived names.
    pub fn of(instance: &RabbitMQInstance) -> Result<Self, BuildError> {
        let name = instance.name_any();
        validate_instance_name(&name)?;
        Ok(Self {
            namespace: namespace_of(instance)?,
            owner: owner_reference(instance)?,
            name,
        })
    }

    /// The tenant's vhost and username.
    pub fn tenant(&self) -> String {
        tenant_name(&self.namespace, &self.name)
    }

    /// The DNS name clients connect to.
    pub fn host(&self) -> String {
        service_host(&instance_service_name(&self.name), &self.namespace)
    }

    pub(super) fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_NAME.to_string(), "rabbitmq".to_string()),
            (LABEL_INSTANCE.to_string(), self.name.clone()),
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
            (LABEL_PART_OF.to_string(), "tiermq".to_string()),
            (LABEL_TIERMQ_INSTANCE.to_string(), self.name.clone()),
        ])
    }

    pub(super) fn meta(&self, name: String, extra: &[(&str, &str)]) -> ObjectMeta {
        let mut labels = self.labels();
        for (k, v) in extra {
            labels.insert((*k).to_string(), (*v).to_string());
        }
        object_meta(name, &self.namespace, labels, &self.owner)
    }
}
