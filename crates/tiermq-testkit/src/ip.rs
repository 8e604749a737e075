use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;

use crate::error::TestkitError;
use crate::sweep::{pid_alive, testkit_root};
use crate::{AMQP_PORT, MANAGEMENT_PORT, PROMETHEUS_PORT};

/// A loopback IP from `127.3.0.0`–`127.3.19.254` reserved for this process until dropped, with
/// its own Erlang distribution port.
///
/// Leases are files under the testkit folder created with `O_EXCL`, holding the owner's pid, so
/// parallel test processes never pick the same IP; a lease whose owner died is taken over. An IP
/// is only leased when the standard AMQP and management ports and its distribution port are free.
///
/// Why the distribution port differs per node although every node has its own IP: RabbitMQ's
/// start-up check asks epmd, which serves the whole machine, whether another node already uses
/// the port, whatever that node's IP.
#[derive(Debug)]
pub struct IpLease {
    ip: Ipv4Addr,
    file: PathBuf,
}

impl IpLease {
    pub fn acquire() -> Result<Self, TestkitError> {
        let dir = testkit_root()?.join("leases");
        fs::create_dir_all(&dir).map_err(TestkitError::io("create lease folder", &dir))?;
        for third in 0u8..LEASED_THIRD_OCTETS {
            for fourth in 1u8..=254 {
                let ip = Ipv4Addr::new(127, 3, third, fourth);
                let file = dir.join(ip.to_string());
                if !try_claim(&file)? {
                    continue;
                }
                let lease = IpLease { ip, file };
                if ports_free(ip, dist_port_for(ip)) {
                    return Ok(lease);
                }
                // Dropping the lease releases it; something else uses this IP, try the next.
            }
        }
        Err(TestkitError::NoFreeIp)
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    pub fn dist_port(&self) -> u16 {
        dist_port_for(self.ip)
    }
}

const LEASED_THIRD_OCTETS: u8 = 20;

/// The distribution port of a leased IP: `20000 + index`, below the ephemeral range, and low
/// enough that the CLI tools' ports (distribution port + 10000) stay valid too.
pub(crate) fn dist_port_for(ip: Ipv4Addr) -> u16 {
    let [_, _, third, fourth] = ip.octets();
    20000 + u16::from(third % LEASED_THIRD_OCTETS) * 254 + u16::from(fourth.saturating_sub(1))
}

impl Drop for IpLease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.file);
    }
}

/// Creates the lease file, taking over one whose owner is gone. `Ok(false)` when it is held.
fn try_claim(file: &PathBuf) -> Result<bool, TestkitError> {
    for _ in 0..2 {
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
        {
            Ok(mut f) => {
                write!(f, "{}", std::process::id())
                    .map_err(TestkitError::io("write lease", file))?;
                return Ok(true);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = fs::read_to_string(file).unwrap_or_default();
                match owner.trim().parse::<u32>() {
                    Ok(pid) if pid_alive(pid) => return Ok(false),
                    // A lease being written right now has no pid yet: leave it to its writer.
                    Err(_) if owner.is_empty() => return Ok(false),
                    _ => {
                        let _ = fs::remove_file(file);
                    }
                }
            }
            Err(e) => return Err(TestkitError::io("create lease", file)(e)),
        }
    }
    Ok(false)
}

fn ports_free(ip: Ipv4Addr, dist_port: u16) -> bool {
    [AMQP_PORT, MANAGEMENT_PORT, PROMETHEUS_PORT, dist_port]
        .iter()
        .all(|port| TcpListener::bind(SocketAddrV4::new(ip, *port)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_leases_in_one_process_get_different_ips() {
        let a = IpLease::acquire().unwrap();
        let b = IpLease::acquire().unwrap();
        assert_ne!(a.ip(), b.ip());
        assert_eq!(a.ip().octets()[..2], [127, 3]);
        assert_ne!(a.dist_port(), b.dist_port());
        drop(a);
        // Releasing a lease never hands out one still held.
        let c = IpLease::acquire().unwrap();
        assert_ne!(c.ip(), b.ip());
    }

    #[test]
    fn distribution_ports_are_distinct_and_leave_room_for_the_cli() {
        let mut seen = std::collections::HashSet::new();
        for third in 0..LEASED_THIRD_OCTETS {
            for fourth in 1..=254 {
                let port = dist_port_for(Ipv4Addr::new(127, 3, third, fourth));
                assert!(seen.insert(port), "port {port} twice");
                assert!((20000..=25079).contains(&port), "{port}");
                assert!(u32::from(port) + 10_010 < 65_536);
            }
        }
    }
}
