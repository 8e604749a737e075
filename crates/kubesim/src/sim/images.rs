//! Which container images the kubelet runs as local programs.
//!
//! kubesim has no container runtime and pulls no images. A container runs as a real process only
//! when its image maps to something on this machine:
//!
//! - an image containing `rabbitmq` runs as `rabbitmq-server` (see [`super::rabbit`]);
//! - an image whose *repository name* (the last path segment, without registry, tag or digest)
//!   is a key of [`ImageBinaries`] runs as that binary, with the container's `args` as its
//!   arguments. `ghcr.io/acme/tiermq-operator:0.1.0`, `tiermq/tiermq-operator` and
//!   `tiermq-operator@sha256:...` all map to the binary registered as `tiermq-operator`
//!   (`kubesim up --image-binary tiermq-operator=target/debug/tiermq-operator`,
//!   [`crate::cluster::ClusterConfig::image_binaries`]);
//! - any other image "runs" without a process: its containers are reported running and ready.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Repository name → local binary that stands in for the image (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageBinaries(BTreeMap<String, PathBuf>);

impl ImageBinaries {
    /// No image runs as a local binary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Images whose repository name is `repository` run as `binary`.
    pub fn insert(&mut self, repository: impl Into<String>, binary: impl Into<PathBuf>) {
        self.0.insert(repository.into(), binary.into());
    }

    /// Parses `NAME=PATH` (the `kubesim up --image-binary` form).
    pub fn parse_entry(entry: &str) -> Result<(String, PathBuf), String> {
        match entry.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => {
                Ok((name.to_string(), PathBuf::from(path)))
            }
            _ => Err(format!(
                "expected REPOSITORY=PATH (e.g. tiermq-operator=target/debug/tiermq-operator), got {entry:?}"
            )),
        }
    }

    /// The binary `image` runs as, if it maps to one.
    pub fn binary_for(&self, image: &str) -> Option<&Path> {
        self.0.get(repository_name(image)).map(PathBuf::as_path)
    }

    /// Whether no image maps to a binary.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The last path segment of an image reference, without tag or digest:
/// `registry:5000/team/app:1.2@sha256:ab` → `app`.
pub fn repository_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    last.split(':').next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_map_by_repository_name_whatever_the_registry_tag_or_digest() {
        let mut m = ImageBinaries::new();
        m.insert("tiermq-operator", "/bin/op");
        for image in [
            "tiermq-operator",
            "tiermq/tiermq-operator:0.1.0",
            "registry.local:5000/acme/tiermq-operator:dev",
            "tiermq/tiermq-operator@sha256:0123",
            "tiermq/tiermq-operator:0.1.0@sha256:0123",
        ] {
            assert_eq!(m.binary_for(image), Some(Path::new("/bin/op")), "{image}");
        }
        for image in [
            "tiermq/tiermq-operator-extra",
            "registry.local:5000/busybox",
            "rabbitmq:3.10",
        ] {
            assert_eq!(m.binary_for(image), None, "{image}");
        }
        assert_eq!(
            ImageBinaries::parse_entry("a=/x/y"),
            Ok(("a".into(), "/x/y".into()))
        );
        assert!(ImageBinaries::parse_entry("a").is_err());
        assert!(ImageBinaries::parse_entry("=b").is_err());
    }
}
