//! UDP NAT and the DNS forwarder, next to smoltcp rather than through it.
//!
//! Each (container endpoint, destination) pair gets one host UDP socket
//! connected to the mapped destination; replies are written to the TUN as
//! IPv4 packets whose source is the destination the container used. DNS
//! (10.0.2.3:53) is the same, with the socket connected to a host
//! resolver; a query unanswered after 2 s is resent to the next one.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, UdpPacket, UdpRepr};

use super::MTU;
use super::device::TunDevice;
use super::stack::{Interest, Source};
use super::tcp::FlowKey;

const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DNS_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const DNS_RETRY_AFTER: Duration = Duration::from_secs(2);
/// Beyond this many flows the least recently used one is closed.
const MAX_FLOWS: usize = 1024;
const UDP_HEADER: usize = 8;
const IPV4_HEADER: usize = 20;

struct DnsQuery {
    query: Vec<u8>,
    sent_at: Instant,
    upstream: usize,
    answered: bool,
}

struct UdpFlow {
    host: UdpSocket,
    ready: bool,
    last_used: Instant,
    /// Set for flows to the DNS forwarder.
    dns: Option<DnsQuery>,
}

/// Where a datagram from the container goes on the host.
pub enum UdpTarget {
    Host(SocketAddr),
    Dns,
}

pub struct UdpNat {
    flows: HashMap<FlowKey, UdpFlow>,
    upstreams: Vec<SocketAddr>,
    buffer: Vec<u8>,
    scratch: Vec<u8>,
}

impl UdpNat {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            flows: HashMap::new(),
            upstreams,
            buffer: vec![0; MTU],
            scratch: Vec::new(),
        }
    }

    /// Sends a datagram of the container's on the host side.
    pub fn send(&mut self, key: FlowKey, target: UdpTarget, payload: &[u8]) {
        let now = Instant::now();
        if !self.flows.contains_key(&key) {
            let Ok(flow) = self.open_flow(&target) else {
                return;
            };
            self.make_room();
            self.flows.insert(key, flow);
        }
        let flow = self.flows.get_mut(&key).expect("inserted above");
        flow.last_used = now;
        if let Some(dns) = &mut flow.dns {
            dns.query.clear();
            dns.query.extend_from_slice(payload);
            dns.sent_at = now;
            dns.answered = false;
        }
        // Like a lossy link: a datagram the host refuses is lost.
        let _ = flow.host.send(payload);
    }

    fn open_flow(&self, target: &UdpTarget) -> io::Result<UdpFlow> {
        let (destination, dns) = match target {
            UdpTarget::Host(addr) => (*addr, None),
            UdpTarget::Dns => {
                let first = *self.upstreams.first().ok_or(io::ErrorKind::NotFound)?;
                let query = DnsQuery {
                    query: Vec::new(),
                    sent_at: Instant::now(),
                    upstream: 0,
                    answered: false,
                };
                (first, Some(query))
            }
        };
        let host = UdpSocket::bind(unspecified_like(destination))?;
        host.set_nonblocking(true)?;
        host.connect(destination)?;
        Ok(UdpFlow {
            host,
            ready: false,
            last_used: Instant::now(),
            dns,
        })
    }

    fn make_room(&mut self) {
        if self.flows.len() < MAX_FLOWS {
            return;
        }
        let oldest = self
            .flows
            .iter()
            .min_by_key(|(_, flow)| flow.last_used)
            .map(|(key, _)| *key);
        if let Some(key) = oldest {
            self.flows.remove(&key);
        }
    }

    pub fn register(&self, interest: &mut Interest) {
        for (key, flow) in &self.flows {
            interest.add(flow.host.as_raw_fd(), libc::POLLIN, Source::Udp(*key));
        }
    }

    pub fn mark_ready(&mut self, key: &FlowKey) {
        if let Some(flow) = self.flows.get_mut(key) {
            flow.ready = true;
        }
    }

    /// Writes the host's replies to the container.
    pub fn relay_replies(&mut self, device: &TunDevice) {
        let now = Instant::now();
        for ((container, destination), flow) in &mut self.flows {
            if !std::mem::take(&mut flow.ready) {
                continue;
            }
            while let Ok(len) = flow.host.recv(&mut self.buffer) {
                if len + UDP_HEADER + IPV4_HEADER > MTU {
                    continue;
                }
                flow.last_used = now;
                if let Some(dns) = &mut flow.dns {
                    dns.answered = true;
                }
                let datagram = &self.buffer[..len];
                let packet = udp_packet(&mut self.scratch, *destination, *container, datagram);
                device.write_packet(packet);
            }
        }
    }

    /// Resends DNS queries a resolver left unanswered to the next one, and
    /// closes idle flows.
    pub fn tick(&mut self) {
        let now = Instant::now();
        for flow in self.flows.values_mut() {
            if let Some(dns) = &mut flow.dns {
                retry_dns(&flow.host, dns, &self.upstreams, now);
            }
        }
        self.flows.retain(|_, flow| {
            let timeout = if flow.dns.is_some() {
                DNS_IDLE_TIMEOUT
            } else {
                IDLE_TIMEOUT
            };
            now.duration_since(flow.last_used) < timeout
        });
    }
}

fn retry_dns(host: &UdpSocket, dns: &mut DnsQuery, upstreams: &[SocketAddr], now: Instant) {
    let waiting = !dns.answered && !dns.query.is_empty();
    if !waiting || now.duration_since(dns.sent_at) < DNS_RETRY_AFTER {
        return;
    }
    let Some(next) = upstreams.get(dns.upstream + 1) else {
        return;
    };
    dns.upstream += 1;
    dns.sent_at = now;
    if host.connect(next).is_ok() {
        let _ = host.send(&dns.query);
    }
}

fn unspecified_like(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

fn udp_packet<'b>(
    scratch: &'b mut Vec<u8>,
    from: SocketAddrV4,
    to: SocketAddrV4,
    datagram: &[u8],
) -> &'b [u8] {
    let repr = UdpRepr {
        src_port: from.port(),
        dst_port: to.port(),
    };
    let caps = ChecksumCapabilities::default();
    super::wire::ipv4_packet(
        scratch,
        *from.ip(),
        *to.ip(),
        IpProtocol::Udp,
        repr.header_len() + datagram.len(),
        |payload| {
            repr.emit(
                &mut UdpPacket::new_unchecked(payload),
                &(*from.ip()).into(),
                &(*to.ip()).into(),
                datagram.len(),
                |out| out.copy_from_slice(datagram),
                &caps,
            )
        },
    )
}
