//! Pod IP allocation in the cluster's own 127.x.y.0/24.
//!
//! A pod keeps its IP for the life of the cluster, also across delete and re-create under the same
//! name. Real Kubernetes gives a re-created pod a new IP but a stable DNS name
//! (`<pod>.<headless service>`); RabbitMQ identifies a node (and finds its data) by that name.
//! kubesim has no DNS, so the broker's node name is built from the pod IP, and the IP has to be
//! stable instead. Addresses of pods that no longer exist are reused only when the /24 is full.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::{Result, SimError};

/// The pod IPs of one cluster, by pod.
#[derive(Debug)]
pub struct PodIpAllocator {
    prefix: [u8; 3],
    by_pod: BTreeMap<String, u8>,
}

impl PodIpAllocator {
    /// An allocator handing out `prefix.1` ..= `prefix.254`.
    pub fn new(prefix: [u8; 3]) -> Self {
        PodIpAllocator {
            prefix,
            by_pod: BTreeMap::new(),
        }
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], host)
    }

    /// The IP of pod `key` (`namespace/name`): its old one, else the lowest free one, else one
    /// of a pod not in `live` (pods that exist now).
    pub fn assign(&mut self, key: &str, live: &BTreeSet<String>) -> Result<Ipv4Addr> {
        if let Some(h) = self.by_pod.get(key) {
            return Ok(self.addr(*h));
        }
        let used: BTreeSet<u8> = self.by_pod.values().copied().collect();
        let host = match (1..=254u8).find(|h| !used.contains(h)) {
            Some(h) => h,
            None => {
                let stale = self
                    .by_pod
                    .iter()
                    .find(|(k, _)| !live.contains(*k))
                    .map(|(k, h)| (k.clone(), *h));
                match stale {
                    Some((k, h)) => {
                        self.by_pod.remove(&k);
                        h
                    }
                    None => {
                        return Err(SimError::PodIpsExhausted {
                            prefix: format!(
                                "{}.{}.{}",
                                self.prefix[0], self.prefix[1], self.prefix[2]
                            ),
                        });
                    }
                }
            }
        };
        self.by_pod.insert(key.to_string(), host);
        Ok(self.addr(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ips_are_sticky_per_pod_and_reused_only_when_full() {
        let mut a = PodIpAllocator::new([127, 30, 9]);
        let none = BTreeSet::new();
        let ip0 = a.assign("ns/rmq-0", &none).unwrap();
        let ip1 = a.assign("ns/rmq-1", &none).unwrap();
        assert_eq!(ip0, Ipv4Addr::new(127, 30, 9, 1));
        assert_eq!(ip1, Ipv4Addr::new(127, 30, 9, 2));
        assert_eq!(a.assign("ns/rmq-0", &none).unwrap(), ip0);
        for i in 2..254 {
            a.assign(&format!("ns/p-{i}"), &none).unwrap();
        }
        let mut all: BTreeSet<String> = (2..254).map(|i| format!("ns/p-{i}")).collect();
        all.extend(["ns/rmq-0".to_string(), "ns/rmq-1".to_string()]);
        assert!(matches!(
            a.assign("ns/full", &all),
            Err(SimError::PodIpsExhausted { .. })
        ));
        let mut live: BTreeSet<String> = (2..254).map(|i| format!("ns/p-{i}")).collect();
        live.insert("ns/rmq-0".to_string());
        // rmq-1 no longer exists: its address goes to the new pod, rmq-0 keeps its own.
        assert_eq!(a.assign("ns/new", &live).unwrap(), ip1);
        assert_eq!(a.assign("ns/rmq-0", &live).unwrap(), ip0);
    }
}
