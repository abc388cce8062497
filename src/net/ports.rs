//! Published ports: host listeners whose connections go straight to a
//! socket inside the container's network namespace, bypassing the stack.
//!
//! [`bind_ports`] binds every host socket before the container starts, so a
//! port in use is a clear error up front. For each connection the network
//! thread asks a [`SocketFactory`] (den's init, which lives in the netns)
//! for a fresh socket, connects it to `127.0.0.1:<container port>` itself
//! (nonblocking, so the factory never waits on the container's services)
//! and splices bytes both ways through a pipe per direction. UDP ports get
//! one container-side socket per host peer, closed after 60 s idle.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::pipe::{PipeFlags, SpliceFlags};

use super::MTU;
use super::stack::{Interest, Source};

/// Bytes each splice pipe holds (the unprivileged maximum by default).
const PIPE_SIZE: usize = 1 << 20;
const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One `ports:` entry: `[host ip:]host port:container port[/tcp|/udp]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub protocol: Protocol,
    /// Where den listens; 127.0.0.1 unless the entry names an address.
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
}

impl FromStr for PortSpec {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (ports, protocol) = match text.rsplit_once('/') {
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some((_, other)) => bail!("port `{text}`: unknown protocol `{other}` (tcp or udp)"),
            None => (text, Protocol::Tcp),
        };
        let (address, host_port, container_port) = match ports.rsplitn(3, ':').collect::<Vec<_>>()[..]
        {
            [container, host] => (None, host, container),
            [container, host, address] => (Some(address), host, container),
            _ => bail!("port `{text}`: expected `host:container`, e.g. `8080:80`"),
        };
        let host_ip = match address {
            None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(address) => address
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .with_context(|| format!("port `{text}`: `{address}` is not an IP address"))?,
        };
        let number = |port: &str| -> Result<u16> {
            port.parse()
                .ok()
                .filter(|&port| port != 0)
                .with_context(|| format!("port `{text}`: `{port}` is not a port number (1-65535)"))
        };
        Ok(Self {
            protocol,
            host_ip,
            host_port: number(host_port)?,
            container_port: number(container_port)?,
        })
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let host = SocketAddr::new(self.host_ip, self.host_port);
        write!(f, "{host}:{}/{protocol}", self.container_port)
    }
}

/// Makes sockets inside the container's network namespace.
pub trait SocketFactory: Send {
    /// A new, unconnected IPv4 socket of `protocol` created inside the
    /// container's netns (den's init answers this over its channel).
    fn socket(&mut self, protocol: Protocol) -> io::Result<OwnedFd>;
}

enum HostSocket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct Listener {
    spec: PortSpec,
    socket: HostSocket,
}

/// The host sockets of the published ports, bound and listening.
#[derive(Default)]
pub struct BoundPorts {
    listeners: Vec<Listener>,
}

impl BoundPorts {
    /// The address each port is bound to, in the order given (useful with
    /// host port 0 in tests).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|listener| match &listener.socket {
                HostSocket::Tcp(socket) => socket.local_addr().ok(),
                HostSocket::Udp(socket) => socket.local_addr().ok(),
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }
}

/// Binds every published port on the host; call it before the container
/// starts, so that a port in use stops den with a clear error.
pub fn bind_ports(specs: &[PortSpec]) -> Result<BoundPorts> {
    let listeners = specs
        .iter()
        .map(|spec| {
            let socket = bind_one(spec).map_err(|error| explain_bind_error(spec, error))?;
            Ok(Listener {
                spec: spec.clone(),
                socket,
            })
        })
        .collect::<Result<_>>()?;
    Ok(BoundPorts { listeners })
}

fn bind_one(spec: &PortSpec) -> io::Result<HostSocket> {
    let addr = SocketAddr::new(spec.host_ip, spec.host_port);
    Ok(match spec.protocol {
        Protocol::Tcp => {
            let listener = TcpListener::bind(addr)?;
            listener.set_nonblocking(true)?;
            HostSocket::Tcp(listener)
        }
        Protocol::Udp => {
            let socket = UdpSocket::bind(addr)?;
            socket.set_nonblocking(true)?;
            HostSocket::Udp(socket)
        }
    })
}

fn explain_bind_error(spec: &PortSpec, error: io::Error) -> anyhow::Error {
    let (port, ip) = (spec.host_port, spec.host_ip);
    let hint = match error.kind() {
        io::ErrorKind::AddrInUse => format!(
            "port {port} is already in use on {ip}: stop what listens there, or publish \
             another host port (e.g. `{}:{}`)",
            port.saturating_add(1000).max(1024),
            spec.container_port
        ),
        io::ErrorKind::PermissionDenied => format!(
            "port {port} on {ip} is privileged (below net.ipv4.ip_unprivileged_port_start): \
             publish a host port of 1024 or more, e.g. `8080:{}`",
            spec.container_port
        ),
        io::ErrorKind::AddrNotAvailable => {
            format!("{ip} is not an address of this host: publish on 127.0.0.1 or 0.0.0.0")
        }
        _ => format!("could not listen on {ip} port {port}"),
    };
    anyhow::Error::new(error).context(format!("published port {spec}: {hint}"))
}

#[derive(Clone, Copy, Debug)]
pub enum PortToken {
    Listener(usize),
    Tcp(u64),
    Udp(u64),
}

/// One direction of a spliced connection: `from` → pipe → `to`.
struct Pump {
    pipe_read: OwnedFd,
    pipe_write: OwnedFd,
    buffered: usize,
    /// The pipe took no more although `from` had data: wait for `to`
    /// before reading again (else poll would report `from` forever).
    pipe_full: bool,
    eof: bool,
    done: bool,
}

struct SplicedConnection {
    host: TcpStream,
    inner: TcpStream,
    connected: bool,
    ready: bool,
    to_inner: Pump,
    to_host: Pump,
}

struct UdpRelay {
    listener: usize,
    peer: SocketAddr,
    inner: UdpSocket,
    ready: bool,
    last_used: Instant,
}

/// The published ports' side of the network thread.
pub struct Forwarder {
    listeners: Vec<Listener>,
    ready_listeners: Vec<bool>,
    factory: Option<Box<dyn SocketFactory>>,
    connections: HashMap<u64, SplicedConnection>,
    relays: HashMap<u64, UdpRelay>,
    relay_of_peer: HashMap<(usize, SocketAddr), u64>,
    next_id: u64,
    buffer: Vec<u8>,
}

impl Forwarder {
    pub fn new(ports: BoundPorts, factory: Option<Box<dyn SocketFactory>>) -> Self {
        let ready_listeners = vec![false; ports.listeners.len()];
        Self {
            listeners: ports.listeners,
            ready_listeners,
            factory,
            connections: HashMap::new(),
            relays: HashMap::new(),
            relay_of_peer: HashMap::new(),
            next_id: 0,
            buffer: vec![0; MTU],
        }
    }

    pub fn register(&self, interest: &mut Interest) {
        for (index, listener) in self.listeners.iter().enumerate() {
            let fd = match &listener.socket {
                HostSocket::Tcp(socket) => socket.as_raw_fd(),
                HostSocket::Udp(socket) => socket.as_raw_fd(),
            };
            interest.add(fd, libc::POLLIN, Source::Port(PortToken::Listener(index)));
        }
        for (&id, connection) in &self.connections {
            let source = Source::Port(PortToken::Tcp(id));
            if !connection.connected {
                interest.add(connection.inner.as_raw_fd(), libc::POLLOUT, source);
                continue;
            }
            let (host, inner) = (&connection.host, &connection.inner);
            let host_events =
                connection.to_inner.input_events() | connection.to_host.output_events();
            let inner_events =
                connection.to_host.input_events() | connection.to_inner.output_events();
            interest.add(host.as_raw_fd(), host_events, source);
            interest.add(inner.as_raw_fd(), inner_events, source);
        }
        for (&id, relay) in &self.relays {
            let source = Source::Port(PortToken::Udp(id));
            interest.add(relay.inner.as_raw_fd(), libc::POLLIN, source);
        }
    }

    pub fn mark_ready(&mut self, token: PortToken) {
        match token {
            PortToken::Listener(index) => self.ready_listeners[index] = true,
            PortToken::Tcp(id) => {
                if let Some(connection) = self.connections.get_mut(&id) {
                    connection.ready = true;
                }
            }
            PortToken::Udp(id) => {
                if let Some(relay) = self.relays.get_mut(&id) {
                    relay.ready = true;
                }
            }
        }
    }

    /// Accepts, relays and splices whatever poll reported ready.
    pub fn service(&mut self) {
        for index in 0..self.listeners.len() {
            if std::mem::take(&mut self.ready_listeners[index]) {
                self.serve_listener(index);
            }
        }
        self.connections.retain(|_, connection| {
            !std::mem::take(&mut connection.ready) || connection.advance().unwrap_or(false)
        });
        self.relay_to_peers();
        let now = Instant::now();
        self.relays
            .retain(|_, relay| now.duration_since(relay.last_used) < UDP_IDLE_TIMEOUT);
        let relays = &self.relays;
        self.relay_of_peer.retain(|_, id| relays.contains_key(id));
    }

    fn serve_listener(&mut self, index: usize) {
        let port = self.listeners[index].spec.container_port;
        while let Some(accepted) = self.accept(index) {
            // A connection the container side can't take is closed at once.
            if let Ok(connection) = self.open_connection(accepted, port) {
                self.next_id += 1;
                self.connections.insert(self.next_id, connection);
            }
        }
        if matches!(self.listeners[index].socket, HostSocket::Udp(_)) {
            self.relay_from_peers(index);
        }
    }

    fn accept(&self, index: usize) -> Option<TcpStream> {
        match &self.listeners[index].socket {
            HostSocket::Tcp(listener) => listener.accept().ok().map(|(stream, _)| stream),
            HostSocket::Udp(_) => None,
        }
    }

    fn inner_socket(&mut self, protocol: Protocol, port: u16) -> io::Result<OwnedFd> {
        let factory = self.factory.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        let socket = factory.socket(protocol)?;
        rustix::io::ioctl_fionbio(&socket, true)?;
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        match rustix::net::connect(&socket, &target) {
            Ok(()) | Err(rustix::io::Errno::INPROGRESS) => Ok(socket),
            Err(error) => Err(error.into()),
        }
    }

    fn open_connection(&mut self, host: TcpStream, port: u16) -> io::Result<SplicedConnection> {
        host.set_nonblocking(true)?;
        host.set_nodelay(true)?;
        let inner = TcpStream::from(self.inner_socket(Protocol::Tcp, port)?);
        inner.set_nodelay(true)?;
        Ok(SplicedConnection {
            host,
            inner,
            connected: false,
            ready: false,
            to_inner: Pump::new()?,
            to_host: Pump::new()?,
        })
    }

    fn relay_from_peers(&mut self, index: usize) {
        loop {
            let HostSocket::Udp(socket) = &self.listeners[index].socket else {
                return;
            };
            let Ok((len, peer)) = socket.recv_from(&mut self.buffer) else {
                return;
            };
            let Some(id) = self.relay_for(index, peer) else {
                continue;
            };
            let relay = self.relays.get_mut(&id).expect("relay_for returned it");
            relay.last_used = Instant::now();
            let _ = relay.inner.send(&self.buffer[..len]);
        }
    }

    fn relay_for(&mut self, index: usize, peer: SocketAddr) -> Option<u64> {
        if let Some(&id) = self.relay_of_peer.get(&(index, peer)) {
            return Some(id);
        }
        let port = self.listeners[index].spec.container_port;
        let inner = UdpSocket::from(self.inner_socket(Protocol::Udp, port).ok()?);
        self.next_id += 1;
        let relay = UdpRelay {
            listener: index,
            peer,
            inner,
            ready: false,
            last_used: Instant::now(),
        };
        self.relays.insert(self.next_id, relay);
        self.relay_of_peer.insert((index, peer), self.next_id);
        Some(self.next_id)
    }

    fn relay_to_peers(&mut self) {
        for relay in self.relays.values_mut() {
            if !std::mem::take(&mut relay.ready) {
                continue;
            }
            let HostSocket::Udp(socket) = &self.listeners[relay.listener].socket else {
                continue;
            };
            while let Ok(len) = relay.inner.recv(&mut self.buffer) {
                relay.last_used = Instant::now();
                let _ = socket.send_to(&self.buffer[..len], relay.peer);
            }
        }
    }
}

impl SplicedConnection {
    /// Moves what can be moved; `Ok(false)` once both directions are done.
    fn advance(&mut self) -> io::Result<bool> {
        if !self.connected {
            match rustix::net::sockopt::socket_error(&self.inner)? {
                Ok(()) => self.connected = true,
                Err(error) => return Err(error.into()),
            }
        }
        self.to_inner.pump(&self.host, &self.inner)?;
        self.to_host.pump(&self.inner, &self.host)?;
        Ok(!(self.to_inner.done && self.to_host.done))
    }
}

impl Pump {
    fn new() -> io::Result<Self> {
        let (pipe_read, pipe_write) =
            rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
        // A smaller pipe only means more splice calls.
        let _ = rustix::pipe::fcntl_setpipe_size(&pipe_write, PIPE_SIZE);
        Ok(Self {
            pipe_read,
            pipe_write,
            buffered: 0,
            pipe_full: false,
            eof: false,
            done: false,
        })
    }

    fn input_events(&self) -> libc::c_short {
        if self.eof || self.pipe_full {
            0
        } else {
            libc::POLLIN
        }
    }

    fn output_events(&self) -> libc::c_short {
        if self.buffered > 0 { libc::POLLOUT } else { 0 }
    }

    /// Fills the pipe from `from` and empties it into `to` until neither
    /// moves; reading goes on while `to` is slow, up to the pipe's size.
    fn pump(&mut self, from: &impl AsFd, to: &impl AsFd) -> io::Result<()> {
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        loop {
            let mut moved = false;
            if !self.eof && !self.pipe_full {
                match rustix::pipe::splice(from, None, &self.pipe_write, None, PIPE_SIZE, flags) {
                    Ok(0) => self.eof = true,
                    Ok(n) => (self.buffered, moved) = (self.buffered + n, true),
                    Err(rustix::io::Errno::AGAIN) => self.pipe_full = self.buffered > 0,
                    Err(error) => return Err(error.into()),
                }
            }
            if self.buffered > 0 {
                match rustix::pipe::splice(&self.pipe_read, None, to, None, self.buffered, flags) {
                    Ok(n) if n > 0 => {
                        (self.buffered, moved) = (self.buffered - n, true);
                        self.pipe_full = false;
                    }
                    Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
                    Err(error) => return Err(error.into()),
                }
            }
            if !moved {
                break;
            }
        }
        if self.eof && self.buffered == 0 && !self.done {
            self.done = true;
            let _ = rustix::net::shutdown(to, rustix::net::Shutdown::Write);
        }
        Ok(())
    }
}
