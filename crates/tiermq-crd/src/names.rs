//! Name facts both the API (admission rules) and the operator (builders, watches) rely on, kept in
//! one place so the CEL rule users meet and the names the operator derives cannot drift apart.

/// Suffix of an instance's dedicated cluster: instance `orders` runs on `orders-dedicated`.
pub const DEDICATED_CLUSTER_SUFFIX: &str = "-dedicated";

/// Longest broker cluster (StatefulSet) name: its pods carry a `controller-revision-hash` label
/// `<statefulset>-<10 characters>`, which must fit a 63-character label value.
pub const MAX_CLUSTER_NAME_LEN: usize = 52;

/// Longest SharedCluster name: it names its StatefulSet directly.
pub const MAX_SHARED_CLUSTER_NAME_LEN: usize = MAX_CLUSTER_NAME_LEN;

/// Longest instance name: its dedicated cluster `<name>-dedicated` must fit
/// [`MAX_CLUSTER_NAME_LEN`].
pub const MAX_INSTANCE_NAME_LEN: usize = MAX_CLUSTER_NAME_LEN - DEDICATED_CLUSTER_SUFFIX.len();

/// The dedicated broker cluster of instance `instance`.
pub fn dedicated_cluster_name(instance: &str) -> String {
    format!("{instance}{DEDICATED_CLUSTER_SUFFIX}")
}

/// The instance whose dedicated cluster `cluster` is, if its name has that form.
pub fn instance_of_dedicated_cluster(cluster: &str) -> Option<&str> {
    cluster
        .strip_suffix(DEDICATED_CLUSTER_SUFFIX)
        .filter(|i| !i.is_empty())
}

/// Admission message for a too-long instance name.
pub fn instance_name_message() -> String {
    format!(
        "metadata.name must be at most {MAX_INSTANCE_NAME_LEN} characters: the dedicated cluster \
         is named <name>{DEDICATED_CLUSTER_SUFFIX} and its pod labels must fit 63 characters"
    )
}

/// Admission message for a too-long SharedCluster name.
pub fn shared_cluster_name_message() -> String {
    format!(
        "metadata.name must be at most {MAX_SHARED_CLUSTER_NAME_LEN} characters: pod labels of \
         its StatefulSet must fit 63 characters"
    )
}

/// Admission message for a SharedCluster named like an instance's dedicated cluster.
pub fn shared_cluster_suffix_message() -> String {
    format!(
        "metadata.name must not end in {DEDICATED_CLUSTER_SUFFIX}: instance <name> runs its \
         dedicated cluster as <name>{DEDICATED_CLUSTER_SUFFIX}, and the two would share objects"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_instance_still_names_a_cluster_that_fits() {
        assert_eq!(MAX_INSTANCE_NAME_LEN, 42);
        let longest = "a".repeat(MAX_INSTANCE_NAME_LEN);
        assert_eq!(dedicated_cluster_name(&longest).len(), MAX_CLUSTER_NAME_LEN);
        assert_eq!(
            instance_of_dedicated_cluster(&dedicated_cluster_name("orders")),
            Some("orders")
        );
        assert_eq!(instance_of_dedicated_cluster("-dedicated"), None);
        assert_eq!(instance_of_dedicated_cluster("main"), None);
        assert!(instance_name_message().contains("42 characters"));
        assert!(shared_cluster_name_message().contains("52 characters"));
    }
}
