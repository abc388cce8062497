//! TCP: the container's connections, terminated in smoltcp and bridged to
//! host sockets.
//!
//! A SYN to a new 4-tuple starts a nonblocking host connect and is held.
//! When the connect succeeds, a smoltcp socket listens on exactly the
//! SYN's destination (the interface is `any_ip`) and the SYN is handed to
//! the stack, which answers SYN-ACK; when it fails, the SYN goes to the
//! stack with no listener, which answers RST: the container sees "refused".

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, CongestionControl, State};

use super::device::TunDevice;
use super::stack::Interest;

/// Receive and send ring of each smoltcp socket. The receive ring is the
/// advertised window (smoltcp scales it): 1 MiB covers > 10 Gbit/s at
/// loopback round trips. Untouched pages of the zeroed allocation cost no
/// memory.
const SOCKET_BUFFER: usize = 1 << 20;

/// (container endpoint, destination endpoint as the container sees it).
pub type FlowKey = (SocketAddrV4, SocketAddrV4);

enum Phase {
    /// The host connect is under way; the SYN waits.
    Connecting {
        syn: Vec<u8>,
    },
    Bridging(SocketHandle),
}

struct Flow {
    host: TcpStream,
    phase: Phase,
    /// Set from poll's answer: the host socket has something for us.
    ready: bool,
    host_eof: bool,
    host_write_shut: bool,
    established: bool,
}

#[derive(Default)]
pub struct TcpFlows {
    flows: HashMap<FlowKey, Flow>,
}

/// What to do with a SYN packet.
pub enum SynVerdict {
    /// Give it to the stack (a retransmission, or a refusal: RST).
    ToStack(Vec<u8>),
    /// Held until the host connect finishes.
    Held,
    /// A duplicate of a held SYN: drop it.
    Drop(Vec<u8>),
}

impl TcpFlows {
    /// Handles a SYN (without ACK) from the container to `key.1`, which
    /// maps to `host` on the host side (`None`: refused).
    pub fn on_syn(
        &mut self,
        key: FlowKey,
        host: Option<SocketAddr>,
        packet: Vec<u8>,
    ) -> SynVerdict {
        match self.flows.get(&key).map(|flow| &flow.phase) {
            Some(Phase::Connecting { .. }) => return SynVerdict::Drop(packet),
            Some(Phase::Bridging(_)) => return SynVerdict::ToStack(packet),
            None => {}
        }
        let Some(stream) = host.and_then(|addr| connect_nonblocking(addr).ok()) else {
            return SynVerdict::ToStack(packet);
        };
        self.flows.insert(
            key,
            Flow {
                host: stream,
                phase: Phase::Connecting { syn: packet },
                ready: false,
                host_eof: false,
                host_write_shut: false,
                established: false,
            },
        );
        SynVerdict::Held
    }

    /// Adds each flow's host socket to the poll set.
    pub fn register(&self, sockets: &SocketSet<'_>, interest: &mut Interest) {
        for (key, flow) in &self.flows {
            let events = match &flow.phase {
                Phase::Connecting { .. } => libc::POLLOUT,
                Phase::Bridging(handle) => {
                    let sock = sockets.get::<tcp::Socket>(*handle);
                    let mut events = 0;
                    if !flow.host_eof && sock.can_send() {
                        events |= libc::POLLIN;
                    }
                    if sock.recv_queue() > 0 {
                        events |= libc::POLLOUT;
                    }
                    events
                }
            };
            interest.add(
                flow.host.as_raw_fd(),
                events,
                super::stack::Source::Tcp(*key),
            );
        }
    }

    pub fn mark_ready(&mut self, key: &FlowKey) {
        if let Some(flow) = self.flows.get_mut(key) {
            flow.ready = true;
        }
    }

    /// Finishes host connects that poll reported done: a listener plus the
    /// held SYN on success, the SYN alone (so: RST) on failure.
    pub fn finish_connects(&mut self, sockets: &mut SocketSet<'_>, device: &mut TunDevice) {
        let mut failed = Vec::new();
        for (key, flow) in &mut self.flows {
            if !flow.ready || !matches!(flow.phase, Phase::Connecting { .. }) {
                continue;
            }
            flow.ready = false;
            let connected = matches!(rustix::net::sockopt::socket_error(&flow.host), Ok(Ok(())));
            let handle = connected.then(|| sockets.add(listening_socket(key.1)));
            let phase = match handle {
                Some(handle) => Phase::Bridging(handle),
                None => {
                    failed.push(*key);
                    Phase::Connecting { syn: Vec::new() }
                }
            };
            if let Phase::Connecting { syn } = std::mem::replace(&mut flow.phase, phase) {
                device.queue_for_stack(syn);
            }
        }
        for key in failed {
            self.flows.remove(&key);
        }
    }

    /// Moves bytes both ways for every bridged flow.
    pub fn bridge(&mut self, sockets: &mut SocketSet<'_>) {
        for flow in self.flows.values_mut() {
            let Phase::Bridging(handle) = flow.phase else {
                continue;
            };
            let sock = sockets.get_mut::<tcp::Socket>(handle);
            if flow.bridge(sock).is_err() {
                // The host side broke (reset, unreachable): reset ours too.
                sock.abort();
                flow.host_eof = true;
            }
        }
    }

    /// Forgets flows whose smoltcp socket is done.
    pub fn remove_finished(&mut self, sockets: &mut SocketSet<'_>) {
        self.flows.retain(|_, flow| {
            let Phase::Bridging(handle) = flow.phase else {
                return true;
            };
            let sock = sockets.get::<tcp::Socket>(handle);
            let finished = match sock.state() {
                State::Closed => true,
                State::TimeWait => sock.recv_queue() == 0,
                _ => false,
            };
            if finished {
                sockets.remove(handle);
            }
            !finished
        });
    }
}

impl Flow {
    fn bridge(&mut self, sock: &mut tcp::Socket<'_>) -> io::Result<()> {
        self.established |= sock.may_send();
        self.container_to_host(sock)?;
        if self.ready {
            self.ready = false;
            self.host_to_container(sock)?;
        }
        Ok(())
    }

    fn container_to_host(&mut self, sock: &mut tcp::Socket<'_>) -> io::Result<()> {
        let host = &mut self.host;
        while sock.recv_queue() > 0 {
            let written = sock.recv(|data| match host.write(data) {
                Ok(n) => (n, Ok(n)),
                Err(error) => (0, Err(error)),
            });
            match written {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Err(error)) if error.kind() != io::ErrorKind::WouldBlock => return Err(error),
                _ => break,
            }
        }
        // The container sent FIN and everything before it is delivered.
        if self.established && !sock.may_recv() && sock.recv_queue() == 0 && !self.host_write_shut {
            self.host_write_shut = true;
            let _ = self.host.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    fn host_to_container(&mut self, sock: &mut tcp::Socket<'_>) -> io::Result<()> {
        let host = &mut self.host;
        while !self.host_eof && sock.can_send() {
            let read = sock.send(|buffer| match host.read(buffer) {
                Ok(n) => (n, Ok(n)),
                Err(error) => (0, Err(error)),
            });
            match read {
                Ok(Ok(0)) => {
                    self.host_eof = true;
                    sock.close();
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) if error.kind() == io::ErrorKind::WouldBlock => break,
                Ok(Err(error)) => return Err(error),
                Err(_) => break,
            }
        }
        Ok(())
    }
}

fn listening_socket(destination: SocketAddrV4) -> tcp::Socket<'static> {
    let mut sock = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
        tcp::SocketBuffer::new(vec![0; SOCKET_BUFFER]),
    );
    sock.set_nagle_enabled(false);
    sock.set_ack_delay(None);
    sock.set_congestion_control(CongestionControl::Cubic);
    sock.listen(destination)
        .expect("a nonzero port: the SYN came from the kernel");
    sock
}

fn connect_nonblocking(addr: SocketAddr) -> io::Result<TcpStream> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
        Err(error) => return Err(error.into()),
    }
    let stream = TcpStream::from(fd);
    stream.set_nodelay(true)?;
    Ok(stream)
}
