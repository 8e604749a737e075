//! The pod's ServiceAccount credentials, as the kubelet projects them into a container: a token
//! from the TokenRequest API (audience: the API server; bound to the pod, so it stops working when
//! the pod is gone; 3607 s, the kubelet's default), the cluster CA and the namespace, written to
//! `<pod dir>/serviceaccount/{token,ca.crt,namespace}` and bound into the container at
//! `/var/run/secrets/kubernetes.io/serviceaccount` (see `process`). The token is replaced (written
//! aside, then renamed over) once 80 % of its lifetime has passed, as the kubelet does; clients
//! that re-read the file (kube-rs does) keep working.
//!
//! Nothing is projected when the pod or its ServiceAccount sets
//! `automountServiceAccountToken: false` (the pod's setting wins).

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use tokio::time::Instant;

use super::Kubelet;
use crate::sim::{Result, SimError, key_of};

/// The token lifetime the kubelet asks for.
pub const TOKEN_SECONDS: i64 = 3607;

/// The projected credentials of one pod.
pub struct Projected {
    /// The host folder bound into the container.
    pub dir: PathBuf,
    refresh_at: Instant,
}

impl Projected {
    /// Whether the token should be replaced now.
    pub fn refresh_due(&self) -> bool {
        Instant::now() >= self.refresh_at
    }

    /// A refresh failed: try again in a minute (the current token is still valid for a while).
    pub fn retry_later(&mut self) {
        self.refresh_at = Instant::now() + Duration::from_secs(60);
    }
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = dir.join(format!("..{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| SimError::io("write", &tmp, e))?;
    // Readable by the container's user, whoever it is, as the kubelet's default mode 0644.
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| SimError::io("chmod", &tmp, e))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(|e| SimError::io("rename", &path, e))
}

impl Kubelet {
    /// Projects the pod's ServiceAccount credentials (called again, it replaces the token);
    /// `None` when the pod does not mount them or kubesim has no API address for pods.
    pub(super) async fn project_service_account(
        &self,
        pod: &Pod,
        pod_dir: &Path,
    ) -> Result<Option<Projected>> {
        let Some(api) = &self.cfg.api_server else {
            return Ok(None);
        };
        let ns = pod.namespace().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let sa_name = spec
            .service_account_name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
        let sa = sas
            .get_opt(&sa_name)
            .await
            .map_err(|e| SimError::kube("get", "ServiceAccount", format!("{ns}/{sa_name}"), e))?
            .ok_or_else(|| SimError::PodSpec {
                pod: key_of(pod),
                message: format!("serviceaccount \"{sa_name}\" not found"),
            })?;
        let mount = spec
            .automount_service_account_token
            .or(sa.automount_service_account_token)
            .unwrap_or(true);
        if !mount {
            return Ok(None);
        }
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(TOKEN_SECONDS),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(pod.name_any()),
                    uid: pod.uid(),
                }),
            },
            ..Default::default()
        };
        let issued = sas
            .create_token_request(&sa_name, &PostParams::default(), &req)
            .await
            .map_err(|e| {
                SimError::kube(
                    "request a token for",
                    "ServiceAccount",
                    format!("{ns}/{sa_name}"),
                    e,
                )
            })?;
        let token = issued.status.map(|s| s.token).unwrap_or_default();
        let dir = pod_dir.join("serviceaccount");
        std::fs::create_dir_all(&dir).map_err(|e| SimError::io("create", &dir, e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| SimError::io("chmod", &dir, e))?;
        }
        write_atomic(&dir, "ca.crt", api.ca_pem.as_bytes())?;
        write_atomic(&dir, "namespace", ns.as_bytes())?;
        write_atomic(&dir, "token", token.as_bytes())?;
        let lifetime = Duration::from_secs(TOKEN_SECONDS as u64);
        Ok(Some(Projected {
            dir,
            refresh_at: Instant::now() + lifetime.mul_f64(0.8),
        }))
    }
}
