//! Pod volumes and environment as the kubelet sees them: ConfigMap, Secret and projected volumes
//! written as files (Secret files with their `defaultMode`/item mode, group-readable under
//! `fsGroup` as the kubelet makes them), PVCs and emptyDirs as folders, and `env` with
//! `valueFrom` resolved.
//!
//! Layout under the cluster dir: `pods/<ns>/<pod>-<uid>/volumes/<volume>/<key>` (gone with the
//! pod) and `pvc/<ns>/<claim>/` (kept across pod restarts, like a PersistentVolume).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret};
use kube::{Api, Client, ResourceExt};

use super::{Result, SimError, key_of};

/// Host folder of each volume of a pod, by volume name.
pub type VolumePaths = BTreeMap<String, PathBuf>;

/// The host folder standing in for PVC `ns/claim`'s volume.
pub fn pvc_dir(root: &Path, ns: &str, claim: &str) -> PathBuf {
    root.join("pvc").join(ns).join(claim)
}

fn write_file(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| SimError::io("create", parent, e))?;
    }
    // A Secret key written before (a restarted pod) may be read-only by now.
    let _ = std::fs::remove_file(path);
    std::fs::write(path, bytes).map_err(|e| SimError::io("write", path, e))?;
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| SimError::io("chmod", path, e))?;
    }
    Ok(())
}

/// The mode of a Secret volume's file as the kubelet sets it: the item's `mode`, else the
/// volume's `defaultMode`, else 644; with the pod's `fsGroup`, group-readable as well (the kubelet
/// gives the group read access to every file of such a volume).
pub fn secret_file_mode(item: Option<i32>, default: Option<i32>, fs_group: bool) -> u32 {
    let mode = item
        .or(default)
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(0o644)
        & 0o777;
    if fs_group { mode | 0o440 } else { mode }
}

/// Writes `data` (or the `items` of it) into `dir`; `mode` is `None` for ConfigMaps (left as
/// written) and Secret modes as `secret_file_mode` takes them (`defaultMode`, `fsGroup`).
fn write_items(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: Option<(Option<i32>, bool)>,
) -> Result<()> {
    let file_mode = |item: Option<i32>| {
        mode.map(|(default, fs_group)| secret_file_mode(item, default, fs_group))
    };
    match items {
        Some(items) => {
            for it in items {
                if let Some(v) = data.get(&it.key) {
                    write_file(&dir.join(&it.path), v, file_mode(it.mode))?;
                }
            }
        }
        None => {
            for (k, v) in data {
                write_file(&dir.join(k), v, file_mode(None))?;
            }
        }
    }
    Ok(())
}

async fn configmap_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| SimError::kube("get", "ConfigMap", format!("{ns}/{name}"), e))?;
    Ok(cm.map(|cm| {
        let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in cm.data.unwrap_or_default() {
            out.insert(k, v.into_bytes());
        }
        for (k, v) in cm.binary_data.unwrap_or_default() {
            out.insert(k, v.0);
        }
        out
    }))
}

async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| SimError::kube("get", "Secret", format!("{ns}/{name}"), e))?;
    Ok(s.map(|s| {
        let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (k, v) in s.data.unwrap_or_default() {
            out.insert(k, v.0);
        }
        for (k, v) in s.string_data.unwrap_or_default() {
            out.insert(k, v.into_bytes());
        }
        out
    }))
}

fn missing(pod: &Pod, what: &str) -> SimError {
    SimError::PodSpec {
        pod: key_of(pod),
        message: format!("{what} not found; create it (the pod starts once it exists)"),
    }
}

/// Writes every volume of `pod` under `pod_dir` (PVCs under `root/pvc`) and returns their paths.
/// A missing non-optional ConfigMap or Secret is an error (the pod waits, like in Kubernetes).
pub async fn materialise(
    client: &Client,
    root: &Path,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<VolumePaths> {
    let ns = pod.namespace().unwrap_or_default();
    let fs_group = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .is_some_and(|c| c.fs_group.is_some());
    let mut out = VolumePaths::new();
    for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = pod_dir.join("volumes").join(&vol.name);
        if let Some(pvc) = &vol.persistent_volume_claim {
            let d = pvc_dir(root, &ns, &pvc.claim_name);
            std::fs::create_dir_all(&d).map_err(|e| SimError::io("create", &d, e))?;
            out.insert(vol.name.clone(), d);
            continue;
        }
        std::fs::create_dir_all(&dir).map_err(|e| SimError::io("create", &dir, e))?;
        if let Some(cm) = &vol.config_map {
            match configmap_data(client, &ns, &cm.name).await? {
                Some(data) => write_items(&dir, &data, cm.items.as_ref(), None)?,
                None if cm.optional == Some(true) => {}
                None => return Err(missing(pod, &format!("ConfigMap {ns}/{}", cm.name))),
            }
        } else if let Some(sec) = &vol.secret {
            let name = sec.secret_name.clone().unwrap_or_default();
            match secret_data(client, &ns, &name).await? {
                Some(data) => write_items(
                    &dir,
                    &data,
                    sec.items.as_ref(),
                    Some((sec.default_mode, fs_group)),
                )?,
                None if sec.optional == Some(true) => {}
                None => return Err(missing(pod, &format!("Secret {ns}/{name}"))),
            }
        } else if let Some(proj) = &vol.projected {
            for src in proj.sources.iter().flatten() {
                if let Some(cm) = &src.config_map {
                    match configmap_data(client, &ns, &cm.name).await? {
                        Some(data) => write_items(&dir, &data, cm.items.as_ref(), None)?,
                        None if cm.optional == Some(true) => {}
                        None => return Err(missing(pod, &format!("ConfigMap {ns}/{}", cm.name))),
                    }
                }
                if let Some(sec) = &src.secret {
                    match secret_data(client, &ns, &sec.name).await? {
                        Some(data) => write_items(
                            &dir,
                            &data,
                            sec.items.as_ref(),
                            Some((proj.default_mode, fs_group)),
                        )?,
                        None if sec.optional == Some(true) => {}
                        None => return Err(missing(pod, &format!("Secret {ns}/{}", sec.name))),
                    }
                }
            }
        }
        // emptyDir and anything else: an empty folder that lives as long as the pod.
        out.insert(vol.name.clone(), dir);
    }
    Ok(out)
}

/// Where a path inside the container lives on the host, through the container's volumeMounts
/// (longest matching mountPath wins; `subPath` honoured).
pub fn host_path(
    container: &Container,
    volumes: &VolumePaths,
    container_path: &str,
) -> Option<PathBuf> {
    let mut best: Option<(usize, PathBuf)> = None;
    for m in container.volume_mounts.iter().flatten() {
        let mount = m.mount_path.trim_end_matches('/');
        let rest = if container_path == mount {
            ""
        } else if let Some(r) = container_path
            .strip_prefix(mount)
            .and_then(|r| r.strip_prefix('/'))
        {
            r
        } else {
            continue;
        };
        let Some(base) = volumes.get(&m.name) else {
            continue;
        };
        let mut p = base.clone();
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            p = p.join(sub);
        }
        if !rest.is_empty() {
            p = p.join(rest);
        }
        if best.as_ref().is_none_or(|(len, _)| mount.len() > *len) {
            best = Some((mount.len(), p));
        }
    }
    best.map(|(_, p)| p)
}

/// `$(NAME)` references in `input` replaced by the variables' values, as Kubernetes expands env
/// values, `command` and `args`: `$$` is a literal `$` (so `$$(NAME)` stays `$(NAME)`), and a
/// reference to an unknown variable is left as written.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A container's environment with `value` and `valueFrom` (secretKeyRef, configMapKeyRef,
/// fieldRef for name/namespace/uid/podIP/serviceAccountName) resolved and `$(NAME)` references
/// to variables defined earlier in the list expanded. Values are secrets in general: never log
/// them.
pub async fn resolve_env(
    client: &Client,
    pod: &Pod,
    container: &Container,
    pod_ip: &str,
) -> Result<BTreeMap<String, String>> {
    let ns = pod.namespace().unwrap_or_default();
    let mut out = BTreeMap::new();
    for e in container.env.iter().flatten() {
        if let Some(v) = &e.value {
            let v = expand(v, &out);
            out.insert(e.name.clone(), v);
            continue;
        }
        let Some(from) = &e.value_from else { continue };
        let keyed = if let Some(r) = &from.secret_key_ref {
            let data = secret_data(client, &ns, &r.name).await?;
            Some(("Secret", &r.name, &r.key, r.optional, data))
        } else if let Some(r) = &from.config_map_key_ref {
            let data = configmap_data(client, &ns, &r.name).await?;
            Some(("ConfigMap", &r.name, &r.key, r.optional, data))
        } else {
            None
        };
        if let Some((kind, name, key, optional, data)) = keyed {
            let optional = optional == Some(true);
            match data.as_ref().map(|d| d.get(key)) {
                Some(Some(v)) => {
                    out.insert(e.name.clone(), String::from_utf8_lossy(v).into_owned());
                }
                _ if optional => {}
                Some(None) => {
                    return Err(missing(pod, &format!("key {key} in {kind} {ns}/{name}")));
                }
                None => return Err(missing(pod, &format!("{kind} {ns}/{name}"))),
            }
        } else if let Some(f) = &from.field_ref {
            let v = match f.field_path.as_str() {
                "metadata.name" => pod.name_any(),
                "metadata.namespace" => ns.clone(),
                "metadata.uid" => pod.uid().unwrap_or_default(),
                "spec.serviceAccountName" => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".into()),
                "status.podIP" | "status.hostIP" => pod_ip.to_string(),
                "spec.nodeName" => super::NODE_NAME.to_string(),
                _ => continue,
            };
            out.insert(e.name.clone(), v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn secret_files_get_their_mode_and_fs_group_read() {
        assert_eq!(super::secret_file_mode(None, None, false), 0o644);
        assert_eq!(super::secret_file_mode(None, Some(0o400), false), 0o400);
        assert_eq!(
            super::secret_file_mode(Some(0o600), Some(0o400), false),
            0o600
        );
        // What makes a Secret mounted as the cookie unusable for Erlang under fsGroup.
        assert_eq!(super::secret_file_mode(None, Some(0o400), true), 0o440);
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn references_expand_like_kubernetes() {
        let vars: BTreeMap<String, String> = [
            ("POD_IP".to_string(), "127.30.1.4".to_string()),
            ("A".to_string(), "x".to_string()),
        ]
        .into();
        assert_eq!(expand("$(POD_IP):8080", &vars), "127.30.1.4:8080");
        assert_eq!(expand("$$(POD_IP)", &vars), "$(POD_IP)");
        assert_eq!(expand("$(NOPE)-$(A)", &vars), "$(NOPE)-x");
        assert_eq!(expand("cost $5 $(A", &vars), "cost $5 $(A");
        assert_eq!(expand("a$$b$", &vars), "a$b$");
    }

    #[test]
    fn container_paths_resolve_through_mounts() {
        let c: Container = serde_json::from_value(json!({
            "name": "rabbitmq",
            "volumeMounts": [
                {"name": "conf", "mountPath": "/etc/rabbitmq"},
                {"name": "plugins", "mountPath": "/etc/rabbitmq/enabled_plugins", "subPath": "enabled_plugins"},
                {"name": "data", "mountPath": "/var/lib/rabbitmq/mnesia/"}
            ]
        }))
        .unwrap();
        let vols: VolumePaths = [
            ("conf".to_string(), PathBuf::from("/p/conf")),
            ("plugins".to_string(), PathBuf::from("/p/plugins")),
            ("data".to_string(), PathBuf::from("/pvc/data")),
        ]
        .into();
        assert_eq!(
            host_path(&c, &vols, "/etc/rabbitmq/rabbitmq.conf"),
            Some("/p/conf/rabbitmq.conf".into())
        );
        assert_eq!(
            host_path(&c, &vols, "/etc/rabbitmq/enabled_plugins"),
            Some("/p/plugins/enabled_plugins".into())
        );
        assert_eq!(
            host_path(&c, &vols, "/var/lib/rabbitmq/mnesia"),
            Some("/pvc/data".into())
        );
        assert_eq!(host_path(&c, &vols, "/tmp/x"), None);
    }
}
