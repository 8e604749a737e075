//! Pod IP allocation in the cluster's own 127.x.y.0/24.
//!
//! Two modes:
//!
//! - **Sticky** (the default, [`PodIpAllocator::new`]): a pod keeps its IP for the life of the
//!   cluster, also across delete and re-create under the same name. Addresses of pods that no
//!   longer exist are reused only when the /24 is full.
//! - **Fresh** ([`PodIpAllocator::fresh`], `ClusterConfig::with_fresh_pod_ips`): as a real
//!   cluster's CNI does, every new pod object (a new uid) gets a new IP; a container restart
//!   inside the same pod keeps it. The IP of a pod that is gone (or replaced by a new pod of the
//!   same name) is released, and the next one is the first free address after a rotating cursor,
//!   so a released address comes back only once the range wraps.
//!
//! In both modes a host can be *pinned* to a pod ([`PodIpAllocator::pin`]): the address a
//! broker's Erlang node name was made from (see `rabbit`), which lives on in the pod's data
//! folder after the pod gets another IP. A pinned host is never handed to another pod, so no two
//! nodes on the machine ever want the same node name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::{Result, SimError};

/// The pod IPs of one cluster, by pod.
#[derive(Debug)]
pub struct PodIpAllocator {
    prefix: [u8; 3],
    /// Host part and uid of the pod it was given to (the uid only matters in fresh mode).
    by_pod: BTreeMap<String, (String, u8)>,
    /// Fresh mode: the next search starts here.
    cursor: Option<u8>,
    /// Hosts that name a pod's broker node, by pod.
    pinned: BTreeMap<String, u8>,
}

impl PodIpAllocator {
    /// A sticky allocator handing out `prefix.1` ..= `prefix.254`.
    pub fn new(prefix: [u8; 3]) -> Self {
        PodIpAllocator {
            prefix,
            by_pod: BTreeMap::new(),
            cursor: None,
            pinned: BTreeMap::new(),
        }
    }

    /// An allocator in fresh mode: each new pod object gets an address its name did not have
    /// just before (see the module docs).
    pub fn fresh(prefix: [u8; 3]) -> Self {
        PodIpAllocator {
            cursor: Some(1),
            ..Self::new(prefix)
        }
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], host)
    }

    fn exhausted(&self) -> SimError {
        SimError::PodIpsExhausted {
            prefix: format!("{}.{}.{}", self.prefix[0], self.prefix[1], self.prefix[2]),
        }
    }

    /// Is `host` pinned to a pod other than `key`?
    fn pinned_elsewhere(&self, key: &str, host: u8) -> bool {
        self.pinned.iter().any(|(k, h)| *h == host && k != key)
    }

    /// Keeps `host` (an address of this allocator) for pod `key`'s broker node name; replaces the
    /// pod's earlier pin.
    pub fn pin(&mut self, key: &str, ip: Ipv4Addr) {
        let o = ip.octets();
        if o[..3] == self.prefix && (1..=254).contains(&o[3]) {
            self.pinned.insert(key.to_string(), o[3]);
        }
    }

    /// The IP of pod `key` (`namespace/name`) with uid `uid`, given `live` (the pods that exist
    /// now). Sticky: its old one, else the lowest free one, else one of a pod not in `live`.
    /// Fresh: its old one while the uid is the same, else the first free one after the cursor.
    pub fn assign(&mut self, key: &str, uid: &str, live: &BTreeSet<String>) -> Result<Ipv4Addr> {
        match self.cursor {
            None => self.assign_sticky(key, uid, live),
            Some(_) => self.assign_fresh(key, uid, live),
        }
    }

    fn assign_sticky(&mut self, key: &str, uid: &str, live: &BTreeSet<String>) -> Result<Ipv4Addr> {
        if let Some((_, h)) = self.by_pod.get(key) {
            return Ok(self.addr(*h));
        }
        let used: BTreeSet<u8> = self.by_pod.values().map(|(_, h)| *h).collect();
        let host = match (1..=254u8).find(|h| !used.contains(h) && !self.pinned_elsewhere(key, *h))
        {
            Some(h) => h,
            None => {
                let stale = self
                    .by_pod
                    .iter()
                    .find(|(k, (_, h))| !live.contains(*k) && !self.pinned_elsewhere(key, *h))
                    .map(|(k, (_, h))| (k.clone(), *h));
                match stale {
                    Some((k, h)) => {
                        self.by_pod.remove(&k);
                        h
                    }
                    None => return Err(self.exhausted()),
                }
            }
        };
        self.by_pod.insert(key.to_string(), (uid.to_string(), host));
        Ok(self.addr(host))
    }

    fn assign_fresh(&mut self, key: &str, uid: &str, live: &BTreeSet<String>) -> Result<Ipv4Addr> {
        if let Some((u, h)) = self.by_pod.get(key)
            && u == uid
        {
            return Ok(self.addr(*h));
        }
        // Forget the pods that are gone, and this name's previous pod.
        self.by_pod.retain(|k, _| k != key && live.contains(k));
        let used: BTreeSet<u8> = self.by_pod.values().map(|(_, h)| *h).collect();
        let start = self.cursor.unwrap_or(1);
        let host = (0..254u16)
            .map(|i| ((u16::from(start) - 1 + i) % 254 + 1) as u8)
            .find(|h| !used.contains(h) && !self.pinned_elsewhere(key, *h))
            .ok_or_else(|| self.exhausted())?;
        self.cursor = Some(if host == 254 { 1 } else { host + 1 });
        self.by_pod.insert(key.to_string(), (uid.to_string(), host));
        Ok(self.addr(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(keys: &[&str]) -> BTreeSet<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    #[test]
    fn ips_are_sticky_per_pod_and_reused_only_when_full() {
        let mut a = PodIpAllocator::new([127, 30, 9]);
        let none = BTreeSet::new();
        let ip0 = a.assign("ns/rmq-0", "u0", &none).unwrap();
        let ip1 = a.assign("ns/rmq-1", "u1", &none).unwrap();
        assert_eq!(ip0, Ipv4Addr::new(127, 30, 9, 1));
        assert_eq!(ip1, Ipv4Addr::new(127, 30, 9, 2));
        // A new pod object of the same name (another uid) keeps the name's IP.
        assert_eq!(a.assign("ns/rmq-0", "u0-again", &none).unwrap(), ip0);
        for i in 2..254 {
            a.assign(&format!("ns/p-{i}"), "u", &none).unwrap();
        }
        let mut all: BTreeSet<String> = (2..254).map(|i| format!("ns/p-{i}")).collect();
        all.extend(["ns/rmq-0".to_string(), "ns/rmq-1".to_string()]);
        assert!(matches!(
            a.assign("ns/full", "u", &all),
            Err(SimError::PodIpsExhausted { .. })
        ));
        let mut live: BTreeSet<String> = (2..254).map(|i| format!("ns/p-{i}")).collect();
        live.insert("ns/rmq-0".to_string());
        // rmq-1 no longer exists: its address goes to the new pod, rmq-0 keeps its own.
        assert_eq!(a.assign("ns/new", "u", &live).unwrap(), ip1);
        assert_eq!(a.assign("ns/rmq-0", "u0", &live).unwrap(), ip0);
    }

    #[test]
    fn sticky_mode_never_hands_out_a_host_pinned_to_another_pod() {
        let mut a = PodIpAllocator::new([127, 30, 9]);
        a.pin("ns/rmq-0", Ipv4Addr::new(127, 30, 9, 1));
        assert_eq!(
            a.assign("ns/other", "u", &live(&[])).unwrap(),
            Ipv4Addr::new(127, 30, 9, 2)
        );
        // Its own pinned host is fine.
        assert_eq!(
            a.assign("ns/rmq-0", "u0", &live(&[])).unwrap(),
            Ipv4Addr::new(127, 30, 9, 1)
        );
    }

    #[test]
    fn fresh_mode_gives_a_recreated_pod_a_new_ip_and_a_restart_the_same() {
        let ip = |h| Ipv4Addr::new(127, 30, 9, h);
        let mut a = PodIpAllocator::fresh([127, 30, 9]);
        let l = live(&["ns/rmq-0", "ns/rmq-1"]);
        assert_eq!(a.assign("ns/rmq-0", "a", &l).unwrap(), ip(1));
        assert_eq!(a.assign("ns/rmq-1", "b", &l).unwrap(), ip(2));
        // Same pod object (a container restart asks again): same IP.
        assert_eq!(a.assign("ns/rmq-0", "a", &l).unwrap(), ip(1));
        // Deleted and re-created under the same name: a new uid, the next address.
        assert_eq!(a.assign("ns/rmq-0", "a2", &l).unwrap(), ip(3));
        // The released .1 is not reused before the range wraps, though it is the lowest free.
        assert_eq!(a.assign("ns/rmq-0", "a3", &l).unwrap(), ip(4));
        // Pods that are gone release their address; pinned hosts are skipped for other pods.
        a.pin("ns/rmq-1", ip(2));
        let only0 = live(&["ns/rmq-0"]);
        for h in 5..=254 {
            let key = format!("ns/p-{h}");
            let mut l = only0.clone();
            l.insert(key.clone());
            assert_eq!(a.assign(&key, "u", &l).unwrap(), ip(h));
            // Each of these pods is gone before the next one comes.
        }
        // Wrapped: .1 is free (its pod was replaced), .2 is pinned to rmq-1 (gone), .3 is free.
        assert_eq!(
            a.assign("ns/x", "u", &live(&["ns/rmq-0", "ns/x"])).unwrap(),
            ip(1)
        );
        assert_eq!(
            a.assign("ns/y", "u", &live(&["ns/rmq-0", "ns/x", "ns/y"]))
                .unwrap(),
            ip(3)
        );
        // rmq-1 comes back: a new address after the cursor (.4 is rmq-0's).
        let all = live(&["ns/rmq-0", "ns/x", "ns/y", "ns/rmq-1"]);
        assert_eq!(a.assign("ns/rmq-1", "b2", &all).unwrap(), ip(5));
        assert_eq!(a.assign("ns/rmq-0", "a3", &all).unwrap(), ip(4));
    }

    #[test]
    fn fresh_mode_runs_out_when_every_host_is_live_or_pinned() {
        let mut a = PodIpAllocator::fresh([127, 30, 9]);
        let keys: Vec<String> = (1..=253).map(|i| format!("ns/p-{i}")).collect();
        let l: BTreeSet<String> = keys.iter().cloned().collect();
        for k in &keys {
            a.assign(k, "u", &l).unwrap();
        }
        a.pin("ns/gone", Ipv4Addr::new(127, 30, 9, 254));
        assert!(matches!(
            a.assign("ns/new", "u", &l),
            Err(SimError::PodIpsExhausted { .. })
        ));
    }
}
