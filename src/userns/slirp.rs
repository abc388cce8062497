//! `network: slirp` across the namespace boundary.
//!
//! Init, in the container's new network namespace, creates the TUN
//! device (only a process in that netns can) and sends its fd to den
//! over a channel of their own. den runs the user-mode stack (`net`) on
//! it, on a thread started after the clone. Published ports need
//! sockets made inside the container's netns, which den cannot enter
//! (setns is refused to a multi-threaded process), so init makes them on
//! request over the same channel: it is the stack's socket factory.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};

use super::channel::Channel;
use crate::net::{self, NetHandle, NetOptions, Protocol, SocketFactory};

const TAG_TUN: u8 = b'N';
const TAG_TCP: u8 = b't';
const TAG_UDP: u8 = b'u';
const TAG_SOCKET: u8 = b's';
const TAG_REFUSED: u8 = b'x';

/// den's half, prepared before the clone: the published ports are
/// bound now, so a port in use is an error before anything starts.
pub(super) struct DenSide {
    ports: net::BoundPorts,
    options: NetOptions,
    channel: Channel,
}

/// den's half, and the channel end for init.
pub(super) fn prepare(ports: &[net::PortSpec], host_loopback: bool) -> Result<(DenSide, Channel)> {
    let ports = net::bind_ports(ports)?;
    let mut options = NetOptions::from_host()?;
    options.host_loopback = host_loopback;
    let (channel, init_end) = super::channel::pair().context("creating the network channel")?;
    Ok((
        DenSide {
            ports,
            options,
            channel,
        },
        init_end,
    ))
}

/// In den, after the clone: waits for init's TUN device and starts the
/// stack. `None` when init failed first (its error comes on the main
/// channel).
pub(super) fn start(den: DenSide) -> Result<Option<NetHandle>> {
    let tun = match den
        .channel
        .receive_tagged()
        .context("waiting for the container's network")?
    {
        Some((TAG_TUN, Some(tun))) => tun,
        _ => return Ok(None),
    };
    let factory: Option<Box<dyn SocketFactory>> = match den.ports.is_empty() {
        true => None,
        false => Some(Box::new(InitFactory(den.channel))),
    };
    net::start(tun, den.options, den.ports, factory).map(Some)
}

/// In init, right after the id maps: the TUN device, sent to den.
pub(super) fn create_and_send_tun(channel: &Channel) -> Result<()> {
    let tun = net::create_tun()?;
    channel
        .send_fd(TAG_TUN, tun.as_fd())
        .context("handing the network device to den")
}

/// In init: answers one socket request from den's network thread.
/// False when den's end is gone.
pub(super) fn serve_socket_request(channel: &Channel) -> bool {
    let request = match channel.receive_tagged() {
        Ok(Some((tag, _))) => tag,
        Ok(None) | Err(_) => return false,
    };
    let kind = match request {
        TAG_TCP => rustix::net::SocketType::STREAM,
        TAG_UDP => rustix::net::SocketType::DGRAM,
        _ => return true,
    };
    let socket = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        kind,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    );
    let sent = match &socket {
        Ok(socket) => channel.send_fd(TAG_SOCKET, socket.as_fd()),
        Err(_) => channel.send_tag(TAG_REFUSED),
    };
    sent.is_ok()
}

/// den's side of the socket factory: asks init, waits for the answer.
struct InitFactory(Channel);

impl SocketFactory for InitFactory {
    fn socket(&mut self, protocol: Protocol) -> io::Result<OwnedFd> {
        let tag = match protocol {
            Protocol::Tcp => TAG_TCP,
            Protocol::Udp => TAG_UDP,
        };
        self.0.send_tag(tag)?;
        match self.0.receive_tagged()? {
            Some((TAG_SOCKET, Some(socket))) => Ok(socket),
            Some(_) => Err(io::Error::other("the container could not make a socket")),
            None => Err(io::Error::other("the container has ended")),
        }
    }
}
