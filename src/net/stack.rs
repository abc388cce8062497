//! The network thread's event loop: one `poll(2)` over the stop eventfd,
//! the TUN, every host socket and the published ports' sockets.
//!
//! Each round: poll; note which sources are ready; finish host connects;
//! read up to 64 packets from the TUN and sort them (new SYN, UDP, ICMP,
//! the rest to smoltcp); run smoltcp; bridge TCP flows; run smoltcp again
//! to send what bridging queued (data, ACKs, window updates); relay UDP
//! replies and published ports.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpCidr, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use super::device::{READ_BATCH, TunDevice};
use super::ports::{BoundPorts, Forwarder, PortToken, SocketFactory};
use super::tcp::{FlowKey, SynVerdict, TcpFlows};
use super::udp::{UdpNat, UdpTarget};
use super::{CONTAINER_ADDR, DNS_ADDR, GATEWAY_ADDR, NetOptions, PREFIX_LEN};

/// The longest poll sleeps, so UDP idle timeouts and DNS retries run.
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);

/// What a pollfd belongs to.
#[derive(Clone, Copy)]
pub enum Source {
    Stop,
    Tun,
    Tcp(FlowKey),
    Udp(FlowKey),
    Port(PortToken),
}

/// The poll set of one round.
#[derive(Default)]
pub struct Interest {
    fds: Vec<libc::pollfd>,
    sources: Vec<Source>,
}

impl Interest {
    pub fn add(&mut self, fd: RawFd, events: libc::c_short, source: Source) {
        self.fds.push(libc::pollfd {
            fd,
            events,
            revents: 0,
        });
        self.sources.push(source);
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        match crate::sys::signal::poll(&mut self.fds, timeout) {
            Err(error) if error.kind() != std::io::ErrorKind::Interrupted => Err(error),
            _ => Ok(()),
        }
    }

    fn ready(&self) -> impl Iterator<Item = Source> + '_ {
        self.fds
            .iter()
            .zip(&self.sources)
            .filter(|(fd, _)| fd.revents != 0)
            .map(|(_, source)| *source)
    }
}

pub struct Stack {
    device: TunDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    tcp: TcpFlows,
    udp: UdpNat,
    ports: Forwarder,
    options: NetOptions,
    tun_open: bool,
    scratch: Vec<u8>,
}

impl Stack {
    pub fn new(
        tun: OwnedFd,
        options: NetOptions,
        ports: BoundPorts,
        factory: Option<Box<dyn SocketFactory>>,
    ) -> Result<Self> {
        let mut device = TunDevice::new(tun).context("making the TUN fd nonblocking")?;
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = random_seed();
        let mut iface = Interface::new(config, &mut device, Instant::now());
        // Every destination is "ours": each flow is terminated here.
        iface.set_any_ip(true);
        iface.update_ip_addrs(|addrs| {
            for addr in [GATEWAY_ADDR, DNS_ADDR] {
                let _ = addrs.push(IpCidr::new(addr.into(), PREFIX_LEN));
            }
        });
        Ok(Self {
            device,
            iface,
            sockets: SocketSet::new(Vec::new()),
            tcp: TcpFlows::default(),
            udp: UdpNat::new(options.dns_upstreams.clone()),
            ports: Forwarder::new(ports, factory),
            options,
            tun_open: true,
            scratch: Vec::new(),
        })
    }

    /// Runs until `stop` is written to; everything is closed on return.
    pub fn run(mut self, stop: OwnedFd) -> Result<()> {
        loop {
            let mut interest = Interest::default();
            interest.add(stop.as_raw_fd(), libc::POLLIN, Source::Stop);
            if self.tun_open {
                interest.add(self.device.as_fd().as_raw_fd(), libc::POLLIN, Source::Tun);
            }
            self.tcp.register(&self.sockets, &mut interest);
            self.udp.register(&mut interest);
            self.ports.register(&mut interest);
            let timeout = self
                .iface
                .poll_delay(Instant::now(), &self.sockets)
                .map_or(MAX_POLL_WAIT, |delay| delay.into())
                .min(MAX_POLL_WAIT);
            interest
                .wait(timeout)
                .context("waiting for network events")?;
            let mut tun_ready = false;
            for source in interest.ready() {
                match source {
                    Source::Stop => return Ok(()),
                    Source::Tun => tun_ready = true,
                    Source::Tcp(key) => self.tcp.mark_ready(&key),
                    Source::Udp(key) => self.udp.mark_ready(&key),
                    Source::Port(token) => self.ports.mark_ready(token),
                }
            }
            self.round(tun_ready);
        }
    }

    fn round(&mut self, tun_ready: bool) {
        self.tcp
            .finish_connects(&mut self.sockets, &mut self.device);
        if tun_ready {
            self.read_tun();
        }
        let now = Instant::now();
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.tcp.bridge(&mut self.sockets);
        self.iface.poll(now, &mut self.device, &mut self.sockets);
        self.tcp.remove_finished(&mut self.sockets);
        self.udp.relay_replies(&self.device);
        self.udp.tick();
        self.ports.service();
    }

    fn read_tun(&mut self) {
        for _ in 0..READ_BATCH {
            match self.device.read_packet() {
                Ok(Some(packet)) => self.dispatch(packet),
                Ok(None) => break,
                // The container's netns is gone; published ports and the
                // stop signal are all that is left to serve.
                Err(_) => {
                    self.tun_open = false;
                    break;
                }
            }
        }
    }

    /// Sorts one packet from the container.
    fn dispatch(&mut self, packet: Vec<u8>) {
        // IPv6 (router and neighbour solicitations) and fragments: dropped.
        let Ok(ip) = Ipv4Packet::new_checked(&packet[..]) else {
            return self.device.recycle(packet);
        };
        if ip.more_frags() || ip.frag_offset() != 0 {
            return self.device.recycle(packet);
        }
        match ip.next_header() {
            IpProtocol::Tcp => self.dispatch_tcp(packet),
            IpProtocol::Udp => {
                self.dispatch_udp(&packet);
                self.device.recycle(packet);
            }
            IpProtocol::Icmp => {
                super::icmp::answer_echo(&ip, &self.device, &mut self.scratch);
                self.device.recycle(packet);
            }
            _ => self.device.recycle(packet),
        }
    }

    fn dispatch_tcp(&mut self, packet: Vec<u8>) {
        let syn = Ipv4Packet::new_checked(&packet[..]).ok().and_then(|ip| {
            let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
            let is_new = tcp.syn() && !tcp.ack();
            is_new.then(|| flow_key(&ip, tcp.src_port(), tcp.dst_port()))
        });
        let Some(key) = syn else {
            return self.device.queue_for_stack(packet);
        };
        let host = self.host_destination(key.1);
        match self.tcp.on_syn(key, host, packet) {
            SynVerdict::ToStack(packet) => self.device.queue_for_stack(packet),
            SynVerdict::Drop(packet) => self.device.recycle(packet),
            SynVerdict::Held => {}
        }
    }

    fn dispatch_udp(&mut self, packet: &[u8]) {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return;
        };
        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
            return;
        };
        let key = flow_key(&ip, udp.src_port(), udp.dst_port());
        let target = if key.1 == SocketAddrV4::new(DNS_ADDR, 53) {
            UdpTarget::Dns
        } else if let Some(host) = self.host_destination(key.1) {
            UdpTarget::Host(host)
        } else {
            return;
        };
        self.udp.send(key, target, udp.payload());
    }

    /// Where a container flow to `destination` goes on the host; `None`
    /// refuses it.
    fn host_destination(&self, destination: SocketAddrV4) -> Option<SocketAddr> {
        let ip = *destination.ip();
        let port = destination.port();
        if port == 0 {
            return None;
        }
        if ip == DNS_ADDR {
            // DNS over TCP (for answers too big for UDP) goes to the first
            // resolver as a plain TCP flow.
            let resolver = self.options.dns_upstreams.first().copied();
            return resolver.filter(|_| port == 53);
        }
        if ip == GATEWAY_ADDR {
            return self
                .options
                .host_loopback
                .then(|| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
        }
        let own_subnet = (u32::from(ip) >> 8) == (u32::from(CONTAINER_ADDR) >> 8);
        let unroutable =
            ip.is_loopback() || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast();
        (!own_subnet && !unroutable).then_some(SocketAddr::V4(destination))
    }
}

fn flow_key(ip: &Ipv4Packet<&[u8]>, src_port: u16, dst_port: u16) -> FlowKey {
    (
        SocketAddrV4::new(ip.src_addr(), src_port),
        SocketAddrV4::new(ip.dst_addr(), dst_port),
    )
}

/// smoltcp's initial sequence numbers come from this seed.
fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    if crate::sys::process::random(&mut seed).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        return nanos ^ u64::from(std::process::id());
    }
    u64::from_ne_bytes(seed)
}
