//! `network: slirp`: den's user-mode network stack.
//!
//! The container gets a TUN device `tap0` (10.0.2.100/24, MTU 65520,
//! default route via 10.0.2.2), created by its init inside the new network
//! namespace ([`create_tun`]) and passed to den over SCM_RIGHTS. den runs
//! a smoltcp stack on that fd on **one thread of its own** ([`start`]),
//! started after the container was forked (den never forks once it runs):
//!
//! - TCP: every SYN to a new 4-tuple makes den open a nonblocking host
//!   socket to the destination (10.0.2.2 means the host's 127.0.0.1). Only
//!   when that connect succeeds does a smoltcp socket listen on exactly
//!   that destination (`any_ip`) and the held SYN reach it, so a refused
//!   host connect reaches the container as a refused one (RST). Bytes are
//!   copied between the smoltcp ring and the host socket without an
//!   intermediate buffer.
//! - UDP is NATed next to smoltcp: one connected host socket per (container
//!   source, destination), replies written straight to the TUN.
//! - DNS: 10.0.2.3:53 relays queries to the host's resolvers (from
//!   /etc/resolv.conf, loopback ones included: den is on the host network),
//!   over UDP (with fallback to the next resolver) and TCP (the first).
//! - ICMP echo is answered for 10.0.2.2 and 10.0.2.3 only; nothing else is
//!   pretended to be reachable.
//! - Published ports ([`ports`]) bypass the stack: den listens on the host
//!   and splices each connection to a socket made inside the container's
//!   netns by a [`SocketFactory`].
//!
//! [`NetHandle::stop`] (or dropping the handle) closes every flow and
//! listener and joins the thread. Design notes: docs/design/network.md.

mod device;
mod icmp;
pub mod ports;
mod stack;
mod tcp;
mod tun;
mod udp;
mod wire;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

pub use ports::{BoundPorts, PortSpec, Protocol, SocketFactory, bind_ports};
pub use tun::{TUN_NAME, TunError, create_tun};

/// The container's address on `tap0`.
pub const CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The gateway; the host's loopback when [`NetOptions::host_loopback`].
pub const GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The DNS forwarder the container's /etc/resolv.conf names.
pub const DNS_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The name /etc/hosts gives the gateway when host loopback is on.
pub const HOST_NAME: &str = "host.den.internal";
pub const PREFIX_LEN: u8 = 24;
pub const MTU: usize = 65520;

/// How the stack behaves.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// 10.0.2.2 reaches the host's 127.0.0.1; when false it refuses
    /// everything (DNS at 10.0.2.3 still works).
    pub host_loopback: bool,
    /// Where DNS queries to 10.0.2.3 go, tried in order.
    pub dns_upstreams: Vec<SocketAddr>,
}

impl NetOptions {
    /// Host loopback off, DNS through the host's /etc/resolv.conf.
    pub fn from_host() -> Result<Self> {
        let text = std::fs::read_to_string("/etc/resolv.conf")
            .context("reading /etc/resolv.conf for the container's DNS forwarder")?;
        Ok(Self {
            host_loopback: false,
            dns_upstreams: nameservers(&text),
        })
    }
}

/// The `nameserver` entries of a resolv.conf, as port-53 addresses.
pub fn nameservers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|addr| addr.split('%').next()?.parse().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The running stack; stop it (or drop it) when the container has ended.
pub struct NetHandle {
    stop: Option<OwnedFd>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// Starts the stack on `tun` (from [`create_tun`]) on a new thread, with
/// `ports` (bound earlier by [`bind_ports`]) forwarded through `factory`
/// (`None` when nothing is published). Call it only after the container
/// was forked: den must not fork once this thread runs.
pub fn start(
    tun: OwnedFd,
    options: NetOptions,
    ports: BoundPorts,
    factory: Option<Box<dyn SocketFactory>>,
) -> Result<NetHandle> {
    let stop = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .context("creating the network thread's stop eventfd")?;
    let stop_for_thread = stop.try_clone().context("duplicating the stop eventfd")?;
    let stack = stack::Stack::new(tun, options, ports, factory)?;
    let thread = std::thread::Builder::new()
        .name("den-net".into())
        .spawn(move || stack.run(stop_for_thread))
        .context("starting the network thread")?;
    Ok(NetHandle {
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl NetHandle {
    /// Closes every flow and listener and waits for the thread to end.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            signal_stop(&stop).context("telling the network thread to stop")?;
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("the network thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for NetHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

fn signal_stop(stop: &impl AsFd) -> io::Result<()> {
    rustix::io::write(stop, &1u64.to_ne_bytes())?;
    Ok(())
}
