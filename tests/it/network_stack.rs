//! den's user-mode network stack (`den::net`) driven directly, without
//! the den binary, against a real container network namespace: TCP
//! through the gateway (100 MiB each way, 200 connections, shutdown),
//! UDP, ping, the DNS forwarder, published ports and port specs, and the
//! throughput benchmark bench/net runs. `container_network` tests the
//! same stack through den.
//!
//! Each test forks a "container": a child that unshares a user and a
//! network namespace, creates the TUN with [`create_tun`], sends its fd
//! back over a socketpair (SCM_RIGHTS) and then runs client or server code
//! in that netns, exactly as the container's processes would. The test
//! process runs the stack and the host-side servers on 127.0.0.1. Needs
//! /dev/net/tun openable (root, or mode 0666).

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use sha2::{Digest, Sha256};

use den::net::*;

const TIMEOUT: Duration = Duration::from_secs(20);
const IO_TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));

// ------------------------------------------------------------ the harness

/// A forked child in its own user and network namespaces.
struct Container {
    pid: libc::pid_t,
    control: Option<UnixStream>,
    tun: Option<OwnedFd>,
}

impl Container {
    /// Forks the container; `body` runs in it after the TUN fd was sent,
    /// with the control socket (for the test's own messages).
    fn spawn(body: impl FnOnce(&UnixStream) -> Result<()>) -> Container {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        // SAFETY: the child only runs the test's own code and `_exit`s; it
        // never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            drop(ours);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                become_container(&theirs, uid, gid)?;
                body(&theirs)
            }));
            let code = match outcome {
                Ok(Ok(())) => 0,
                Ok(Err(error)) => {
                    report(&format!("container: {error:#}\n"));
                    1
                }
                Err(_) => 2,
            };
            // SAFETY: ends the forked child without running the parent's
            // atexit handlers or destructors.
            unsafe { libc::_exit(code) };
        }
        drop(theirs);
        ours.set_read_timeout(IO_TIMEOUT).unwrap();
        let tun = recv_fd(&ours).expect("the container's TUN fd");
        Container {
            pid,
            control: Some(ours),
            tun: Some(tun),
        }
    }

    fn control(&self) -> &UnixStream {
        self.control.as_ref().expect("control socket still here")
    }

    /// Waits for the container's `body` to finish and checks it succeeded.
    fn finish(mut self) {
        let status = self.wait(TIMEOUT).expect("the container ends in time");
        self.pid = 0;
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the container failed (status {status:#x}); its message is above"
        );
    }

    fn wait(&self, timeout: Duration) -> Option<libc::c_int> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut status = 0;
            // SAFETY: our own child; status is a valid out pointer.
            if unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } == self.pid {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if self.pid > 0 {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn report(message: &str) {
    // SAFETY: a plain write to stderr (no Rust lock: we are a forked child).
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
}

/// In the forked child: dies with the test, unshares, maps ids, creates
/// the TUN and sends it to the test.
fn become_container(control: &UnixStream, uid: u32, gid: u32) -> Result<()> {
    // SAFETY: plain prctl/unshare calls with constant arguments.
    unsafe {
        ensure!(
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == 0,
            "PDEATHSIG"
        );
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
            bail!("unshare: {}", io::Error::last_os_error());
        }
    }
    std::fs::write("/proc/self/setgroups", "deny").context("setgroups")?;
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).context("uid_map")?;
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).context("gid_map")?;
    let tun = create_tun()?;
    send_fd(control, &tun)?;
    Ok(())
}

fn send_fd(socket: &UnixStream, fd: &impl AsFd) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = [fd.as_fd()];
    control.push(SendAncillaryMessage::ScmRights(&fds));
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(b"F")],
        &mut control,
        SendFlags::empty(),
    )?;
    Ok(())
}

fn recv_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "no fd in the message",
    ))
}

fn options(host_loopback: bool) -> NetOptions {
    NetOptions {
        host_loopback,
        dns_upstreams: Vec::new(),
    }
}

/// Starts the stack on the container's TUN with no published ports.
fn start_stack(container: &mut Container, options: NetOptions) -> NetHandle {
    let tun = container.tun.take().expect("TUN not yet used");
    start(tun, options, BoundPorts::default(), None).expect("the stack starts")
}

fn gateway(port: u16) -> SocketAddr {
    SocketAddr::from((GATEWAY_ADDR, port))
}

fn connect(addr: SocketAddr) -> Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(IO_TIMEOUT)?;
    stream.set_write_timeout(IO_TIMEOUT)?;
    Ok(stream)
}

/// A host server on 127.0.0.1 handling each connection on its own thread.
fn host_server(handler: fn(TcpStream)) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            stream.set_read_timeout(IO_TIMEOUT).unwrap();
            thread::spawn(move || handler(stream));
        }
    });
    port
}

fn echo(mut stream: TcpStream) {
    let mut reader = stream.try_clone().unwrap();
    let _ = io::copy(&mut reader, &mut stream);
}

// ------------------------------------------------------------------ TCP

#[test]
fn http_request_through_the_gateway_reaches_host_loopback() {
    let port = host_server(|mut stream| {
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            request.push(byte[0]);
        }
        let body = format!(
            "you asked: {}",
            String::from_utf8_lossy(&request)
                .lines()
                .next()
                .unwrap_or("")
        );
        let response = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes());
    });
    let mut container = Container::spawn(move |_| {
        let mut stream = connect(gateway(port))?;
        stream.write_all(b"GET /hello HTTP/1.0\r\nHost: host.den.internal\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        ensure!(
            response.starts_with("HTTP/1.0 200 OK"),
            "response: {response:?}"
        );
        ensure!(
            response.ends_with("you asked: GET /hello HTTP/1.0"),
            "response: {response:?}"
        );
        Ok(())
    });
    let stack = start_stack(&mut container, options(true));
    container.finish();
    stack.stop().unwrap();
}

#[test]
fn closed_port_and_disabled_gateway_are_refused() {
    let open_port = host_server(echo);
    // Bound but not listening: refuses connections, and no other test
    // can take the port meanwhile.
    let closed = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    rustix::net::bind(&closed, &SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
    let closed_port = match rustix::net::getsockname(&closed)
        .unwrap()
        .try_into()
        .unwrap()
    {
        SocketAddr::V4(addr) => addr.port(),
        SocketAddr::V6(addr) => addr.port(),
    };
    for host_loopback in [true, false] {
        let mut container = Container::spawn(move |_| {
            let expect_refused =
                |port| match TcpStream::connect_timeout(&gateway(port), Duration::from_secs(5)) {
                    Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Ok(()),
                    other => bail!("10.0.2.2:{port} (host loopback {host_loopback}): {other:?}"),
                };
            expect_refused(closed_port)?;
            if host_loopback {
                connect(gateway(open_port))?;
            } else {
                expect_refused(open_port)?;
            }
            Ok(())
        });
        let stack = start_stack(&mut container, options(host_loopback));
        container.finish();
        stack.stop().unwrap();
    }
}

/// The `index`th MiB of a transfer: the block, marked with its index.
fn payload_chunk(index: u32, block: &[u8]) -> Vec<u8> {
    let mut chunk = block.to_vec();
    chunk[..4].copy_from_slice(&index.to_le_bytes());
    chunk
}

const MIB: usize = 1 << 20;
const TRANSFER_MIB: u32 = 100;

fn pattern_block() -> Vec<u8> {
    (0..MIB)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

fn expected_digest() -> Vec<u8> {
    let block = pattern_block();
    let mut hasher = Sha256::new();
    for index in 0..TRANSFER_MIB {
        hasher.update(payload_chunk(index, &block));
    }
    hasher.finalize().to_vec()
}

#[test]
fn transfers_100_mib_each_way_intact() {
    // The host server reads an upload to EOF and answers its SHA-256, or
    // (after the byte `D`) sends the download.
    let port = host_server(|mut stream| {
        let mut command = [0u8; 1];
        stream.read_exact(&mut command).unwrap();
        if command[0] == b'D' {
            let block = pattern_block();
            for index in 0..TRANSFER_MIB {
                stream.write_all(&payload_chunk(index, &block)).unwrap();
            }
            return;
        }
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; MIB];
        loop {
            match stream.read(&mut buffer).unwrap() {
                0 => break,
                n => hasher.update(&buffer[..n]),
            }
        }
        stream.write_all(&hasher.finalize()).unwrap();
    });
    let mut container = Container::spawn(move |_| {
        let expected = expected_digest();
        let block = pattern_block();
        let mut upload = connect(gateway(port))?;
        upload.write_all(b"U")?;
        for index in 0..TRANSFER_MIB {
            upload.write_all(&payload_chunk(index, &block))?;
        }
        upload.shutdown(Shutdown::Write)?;
        let mut digest = Vec::new();
        upload.read_to_end(&mut digest)?;
        ensure!(digest == expected, "upload: the host got different bytes");

        let mut download = connect(gateway(port))?;
        download.write_all(b"D")?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0; MIB];
        let mut total = 0;
        loop {
            match download.read(&mut buffer)? {
                0 => break,
                n => {
                    hasher.update(&buffer[..n]);
                    total += n;
                }
            }
        }
        ensure!(
            total == TRANSFER_MIB as usize * MIB,
            "download: {total} bytes"
        );
        ensure!(
            hasher.finalize().to_vec() == expected,
            "download: different bytes"
        );
        Ok(())
    });
    let stack = start_stack(&mut container, options(true));
    container.finish();
    stack.stop().unwrap();
}

#[test]
fn two_hundred_concurrent_connections() {
    let port = host_server(echo);
    let mut container = Container::spawn(move |_| {
        let mut streams = (0..200)
            .map(|_| connect(gateway(port)))
            .collect::<Result<Vec<_>>>()?;
        for (index, stream) in streams.iter_mut().enumerate() {
            stream.write_all(format!("connection {index:03}\n").as_bytes())?;
        }
        for (index, stream) in streams.iter_mut().enumerate() {
            let mut line = [0u8; 15];
            stream.read_exact(&mut line)?;
            ensure!(
                line == *format!("connection {index:03}\n").as_bytes(),
                "connection {index}"
            );
        }
        Ok(())
    });
    let stack = start_stack(&mut container, options(true));
    container.finish();
    stack.stop().unwrap();
}

#[test]
fn stopping_closes_every_flow() {
    let (accepted_tx, accepted_rx) = std::sync::mpsc::channel();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        accepted_tx.send(stream).unwrap();
    });
    let mut container = Container::spawn(move |control| {
        let mut stream = connect(gateway(port))?;
        stream.write_all(b"x")?;
        // Stay connected until the test is done.
        let _ = (&*control).read(&mut [0u8; 1]);
        Ok(())
    });
    let stack = start_stack(&mut container, options(true));
    let mut host_side = accepted_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    host_side
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut byte = [0u8; 1];
    host_side.read_exact(&mut byte).unwrap();
    stack.stop().unwrap();
    assert_eq!(
        host_side.read(&mut byte).unwrap(),
        0,
        "EOF once the stack stopped"
    );
}

// ----------------------------------------------------------- UDP and DNS

#[test]
fn udp_echo_through_the_gateway() {
    let server = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = server.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while let Ok((len, peer)) = server.recv_from(&mut buffer) {
            let _ = server.send_to(&buffer[..len], peer);
        }
    });
    let mut container = Container::spawn(move |_| {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.connect(gateway(port))?;
        for index in 0..3 {
            let message = format!("datagram {index}");
            socket.send(message.as_bytes())?;
            let mut buffer = [0u8; 64];
            let len = socket.recv(&mut buffer).context("no echo")?;
            ensure!(&buffer[..len] == message.as_bytes(), "echo {index}");
        }
        Ok(())
    });
    let stack = start_stack(&mut container, options(true));
    container.finish();
    stack.stop().unwrap();
}

const TEST_NAME: &[&str] = &["db", "den", "test"];
const TEST_ANSWER: [u8; 4] = [192, 0, 2, 7];

/// The answer to `query`: one A record, 192.0.2.7.
fn dns_answer(query: &[u8]) -> Vec<u8> {
    let mut answer = query.to_vec();
    answer[2..4].copy_from_slice(&[0x81, 0x80]); // response, RD, RA
    answer[6..8].copy_from_slice(&[0, 1]); // one answer
    answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    answer.extend_from_slice(&TEST_ANSWER);
    answer
}

/// A UDP socket and a TCP listener on the same free 127.0.0.1 port: the
/// UDP port is picked first, and picked again if its TCP twin is taken
/// (by another test's connection, say).
fn udp_and_tcp_on_one_port() -> (UdpSocket, TcpListener) {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        match TcpListener::bind(udp.local_addr().unwrap()) {
            Ok(tcp) => return (udp, tcp),
            Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(err) => panic!("binding TCP: {err}"),
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// A DNS server on 127.0.0.1 (UDP and TCP on the same port) answering
/// every A query with 192.0.2.7.
fn dns_server() -> SocketAddr {
    let (server, tcp) = udp_and_tcp_on_one_port();
    let addr = server.local_addr().unwrap();
    thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while let Ok((len, peer)) = server.recv_from(&mut buffer) {
            let _ = server.send_to(&dns_answer(&buffer[..len]), peer);
        }
    });
    thread::spawn(move || {
        for mut stream in tcp.incoming().flatten() {
            let mut len = [0u8; 2];
            let _ = stream.read_exact(&mut len);
            let mut query = vec![0; usize::from(u16::from_be_bytes(len))];
            let _ = stream.read_exact(&mut query);
            let answer = dns_answer(&query);
            let _ = stream.write_all(&(answer.len() as u16).to_be_bytes());
            let _ = stream.write_all(&answer);
        }
    });
    addr
}

fn dns_query(id: u16) -> Vec<u8> {
    let mut query = id.to_be_bytes().to_vec();
    query.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in TEST_NAME {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    query
}

/// In the container: asks 10.0.2.3 for the test name, checks the answer.
fn resolve_through_forwarder(wait: Duration) -> Result<()> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.set_read_timeout(Some(wait))?;
    socket.connect((DNS_ADDR, 53))?;
    socket.send(&dns_query(0x5eed))?;
    let mut buffer = [0u8; 512];
    let len = socket.recv(&mut buffer).context("no DNS answer")?;
    let answer = &buffer[..len];
    ensure!(answer[..2] == [0x5e, 0xed], "answer to another query");
    ensure!(answer.ends_with(&TEST_ANSWER), "answer: {answer:?}");
    Ok(())
}

/// In the container: the same over TCP.
fn resolve_over_tcp() -> Result<()> {
    let mut stream = connect(SocketAddr::from((DNS_ADDR, 53)))?;
    let query = dns_query(0x7cb);
    stream.write_all(&(query.len() as u16).to_be_bytes())?;
    stream.write_all(&query)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut answer = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer)?;
    ensure!(answer[..2] == [0x07, 0xcb], "answer to another query");
    ensure!(answer.ends_with(&TEST_ANSWER), "answer: {answer:?}");
    Ok(())
}

#[test]
fn dns_forwarder_relays_to_the_host_resolver() {
    let upstream = dns_server();
    let mut container = Container::spawn(|_| {
        resolve_through_forwarder(Duration::from_secs(2))?;
        resolve_over_tcp()
    });
    let options = NetOptions {
        host_loopback: false,
        dns_upstreams: vec![upstream],
    };
    let stack = start_stack(&mut container, options);
    container.finish();
    stack.stop().unwrap();
}

#[test]
fn dns_forwarder_tries_the_next_resolver() {
    let silent = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let upstream = dns_server();
    let mut container = Container::spawn(|_| resolve_through_forwarder(Duration::from_secs(5)));
    let options = NetOptions {
        host_loopback: true,
        dns_upstreams: vec![silent.local_addr().unwrap(), upstream],
    };
    let stack = start_stack(&mut container, options);
    container.finish();
    stack.stop().unwrap();
}

#[test]
fn resolv_conf_nameservers() {
    let text = "# comment\nnameserver 127.0.0.53\nsearch example\nnameserver fe80::1%eth0\n nameserver 10.0.0.1 \n";
    assert_eq!(
        nameservers(text),
        ["127.0.0.53:53", "[fe80::1]:53", "10.0.0.1:53"]
            .map(|addr| addr.parse::<SocketAddr>().unwrap())
    );
}

// ------------------------------------------------------------------ ICMP

#[test]
fn ping_to_the_gateway_is_answered() {
    let mut container = Container::spawn(|_| {
        // SAFETY: a raw ICMP socket; root in the container's userns may.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        ensure!(fd >= 0, "raw socket: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor we own.
        let socket = UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        socket.set_read_timeout(Some(Duration::from_secs(2)))?;
        socket.connect((GATEWAY_ADDR, 0))?;
        // Echo request, id 7, seq 1, checksum precomputed for this payload.
        let mut request = [8u8, 0, 0, 0, 0, 7, 0, 1, b'd', b'e', b'n', b'!'];
        let checksum = internet_checksum(&request);
        request[2..4].copy_from_slice(&checksum.to_be_bytes());
        socket.send(&request)?;
        let mut buffer = [0u8; 128];
        let len = socket.recv(&mut buffer).context("no echo reply")?;
        let reply = &buffer[20..len]; // after the IPv4 header
        ensure!(
            reply[0] == 0 && reply[4..] == request[4..],
            "reply: {reply:?}"
        );
        Ok(())
    });
    let stack = start_stack(&mut container, options(false));
    container.finish();
    stack.stop().unwrap();
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

// ------------------------------------------------------- published ports

/// The test's socket factory: asks the container child for sockets.
struct ChildFactory(UnixStream);

impl SocketFactory for ChildFactory {
    fn socket(&mut self, protocol: Protocol) -> io::Result<OwnedFd> {
        let request = match protocol {
            Protocol::Tcp => b"T",
            Protocol::Udp => b"U",
        };
        self.0.write_all(request)?;
        recv_fd(&self.0)
    }
}

/// In the container: answers socket requests until the test hangs up.
fn serve_sockets(control: &UnixStream) -> Result<()> {
    let mut request = [0u8; 1];
    while (&*control).read(&mut request)? == 1 {
        let kind = if request[0] == b'T' {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_DGRAM
        };
        // SAFETY: plain socket creation; checked below.
        let fd = unsafe { libc::socket(libc::AF_INET, kind | libc::SOCK_CLOEXEC, 0) };
        ensure!(fd >= 0, "socket: {}", io::Error::last_os_error());
        // SAFETY: a fresh descriptor we own.
        send_fd(control, &unsafe { OwnedFd::from_raw_fd(fd) })?;
    }
    Ok(())
}

fn published(protocol: Protocol, container_port: u16) -> PortSpec {
    PortSpec {
        protocol,
        host_ip: Ipv4Addr::LOCALHOST.into(),
        host_port: 0,
        container_port,
    }
}

#[test]
fn published_tcp_and_udp_ports_reach_the_container() {
    let mut container = Container::spawn(|control| {
        let tcp = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 80))?;
        thread::spawn(move || {
            for stream in tcp.incoming().flatten() {
                thread::spawn(move || echo(stream));
            }
        });
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 53))?;
        thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while let Ok((len, peer)) = udp.recv_from(&mut buffer) {
                let mut reply = b"from the container: ".to_vec();
                reply.extend_from_slice(&buffer[..len]);
                let _ = udp.send_to(&reply, peer);
            }
        });
        (&*control).write_all(b"R")?;
        serve_sockets(control)
    });
    let mut ready = [0u8; 1];
    container.control().read_exact(&mut ready).unwrap();
    let ports = bind_ports(&[published(Protocol::Tcp, 80), published(Protocol::Udp, 53)]).unwrap();
    let addrs = ports.local_addrs();
    let factory = ChildFactory(container.control.take().unwrap());
    let tun = container.tun.take().unwrap();
    let stack = start(tun, options(true), ports, Some(Box::new(factory))).unwrap();

    let clients: Vec<_> = (0..4)
        .map(|index| {
            let addr = addrs[0];
            thread::spawn(move || {
                let mut stream = connect(addr).unwrap();
                let message = vec![index as u8; 3 * MIB];
                let mut writer = stream.try_clone().unwrap();
                let sender = thread::spawn(move || {
                    writer.write_all(&message).unwrap();
                    writer.shutdown(Shutdown::Write).unwrap();
                });
                let mut back = Vec::new();
                stream.read_to_end(&mut back).unwrap();
                sender.join().unwrap();
                assert!(back.len() == 3 * MIB && back.iter().all(|&b| b == index as u8));
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }

    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    udp.send_to(b"ping", addrs[1]).unwrap();
    let mut buffer = [0u8; 64];
    let len = udp.recv(&mut buffer).unwrap();
    assert_eq!(&buffer[..len], b"from the container: ping");

    stack.stop().unwrap();
    let refused = TcpStream::connect_timeout(&addrs[0], Duration::from_secs(2));
    assert!(refused.is_err(), "the published port is closed after stop");
    container.finish();
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let spec: PortSpec = format!("127.0.0.1:{port}:80").parse().unwrap();
    let error = format!(
        "{:#}",
        bind_ports(&[spec]).err().expect("the port is taken")
    );
    assert!(
        error.contains(&format!("port {port} is already in use on 127.0.0.1")),
        "{error}"
    );
}

#[test]
fn port_specs_parse() {
    let parse = |text: &str| text.parse::<PortSpec>();
    let spec = parse("8080:80").unwrap();
    assert_eq!(
        spec,
        PortSpec {
            protocol: Protocol::Tcp,
            host_ip: Ipv4Addr::LOCALHOST.into(),
            host_port: 8080,
            container_port: 80
        }
    );
    let spec = parse("0.0.0.0:5432:5432").unwrap();
    assert_eq!(
        (spec.host_ip, spec.host_port),
        (Ipv4Addr::UNSPECIFIED.into(), 5432)
    );
    let spec = parse("5353:53/udp").unwrap();
    assert_eq!(
        (spec.protocol, spec.host_port, spec.container_port),
        (Protocol::Udp, 5353, 53)
    );
    assert_eq!(
        parse("[::1]:8080:80").unwrap().host_ip,
        "::1".parse::<std::net::IpAddr>().unwrap()
    );
    for bad in ["80", "8080:80/sctp", "x:80", "8080:0", "1.2.3:8080:80"] {
        assert!(parse(bad).is_err(), "{bad} should not parse");
    }
}

// -------------------------------------------------------------- benchmark

/// Throughput through den's stack and a published port, with iperf3 (run
/// by bench/net: `cargo test --release --test it -- --ignored --exact
/// network_stack::net_bench --nocapture`). Prints one `RESULT` line per path.
#[test]
#[ignore = "a benchmark: run by bench/net"]
fn net_bench() {
    let seconds: u32 = std::env::var("DEN_NET_BENCH_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(5);
    let port = free_port();
    let mut server = std::process::Command::new("iperf3")
        .args(["-s", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 (apt-get install iperf3)");
    wait_for_listener(port).unwrap();
    for (label, reverse) in [("den_out", false), ("den_in", true)] {
        let target = format!("10.0.2.2:{port}");
        bench_through_stack(label, &target, reverse, seconds);
    }
    bench_published_port(seconds);
    let (json, _) = measure(|| iperf_client("127.0.0.1", port, seconds, false));
    report_result("host_loopback", &json, 0.0);
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Waits until something listens on TCP `port` in this process's network
/// namespace (an iperf3 server has started). It reads the kernel's socket
/// tables: a probe connection would count as an iperf3 client.
fn wait_for_listener(port: u16) -> Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while !listening_on(port) {
        ensure!(Instant::now() < deadline, "nothing listens on port {port}");
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn listening_on(port: u16) -> bool {
    const LISTEN: &str = "0A";
    let port = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .into_iter()
        .any(|table| {
            let text = std::fs::read_to_string(table).unwrap_or_default();
            text.lines().skip(1).any(|socket| {
                // sl local_address rem_address st ...
                let fields: Vec<&str> = socket.split_whitespace().collect();
                fields.len() > 3 && fields[1].ends_with(&port) && fields[3] == LISTEN
            })
        })
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    listener.local_addr().unwrap().port()
}

fn iperf_client(host: &str, port: u16, seconds: u32, reverse: bool) -> String {
    let mut command = std::process::Command::new("iperf3");
    command.args([
        "-c",
        host,
        "-p",
        &port.to_string(),
        "-t",
        &seconds.to_string(),
        "-J",
    ]);
    if reverse {
        command.arg("-R");
    }
    let output = command.output().expect("running iperf3");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `work` and returns its result with the CPU seconds this process
/// (that is: den's network thread) used meanwhile.
fn measure<T>(work: impl FnOnce() -> T) -> (T, f64) {
    let before = cpu_seconds();
    let result = work();
    (result, cpu_seconds() - before)
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn report_result(label: &str, iperf_json: &str, cpu: f64) {
    let json: serde_json::Value = serde_json::from_str(iperf_json)
        .unwrap_or_else(|error| panic!("{label}: iperf3 output: {error}: {iperf_json}"));
    let received = &json["end"]["sum_received"];
    let bits = received["bits_per_second"].as_f64().unwrap_or(0.0);
    let bytes = received["bytes"].as_f64().unwrap_or(0.0);
    println!(
        "RESULT {label} gbps={:.2} bytes={bytes:.0} cpu_s={cpu:.2} cpu_s_per_gb={:.3}",
        bits / 1e9,
        if bytes > 0.0 {
            cpu / (bytes / 1e9)
        } else {
            0.0
        }
    );
}

fn bench_through_stack(label: &str, target: &str, reverse: bool, seconds: u32) {
    let (host, port) = target.rsplit_once(':').unwrap();
    let (host, port) = (host.to_owned(), port.parse::<u16>().unwrap());
    let mut container = Container::spawn(move |control| {
        let json = iperf_client(&host, port, seconds, reverse);
        (&*control).write_all(json.as_bytes())?;
        Ok(())
    });
    container
        .control()
        .set_read_timeout(Some(Duration::from_secs(u64::from(seconds) + 20)))
        .unwrap();
    let stack = start_stack(&mut container, options(true));
    let (json, cpu) = measure(|| {
        let mut json = String::new();
        container.control().read_to_string(&mut json).unwrap();
        json
    });
    stack.stop().unwrap();
    container.finish();
    report_result(label, &json, cpu);
}

fn bench_published_port(seconds: u32) {
    let mut container = Container::spawn(|control| {
        let mut server = std::process::Command::new("iperf3")
            .args(["-s", "-p", "5201"])
            .stdout(std::process::Stdio::null())
            .spawn()?;
        wait_for_listener(5201)?;
        (&*control).write_all(b"R")?;
        let served = serve_sockets(control);
        server.kill()?;
        served
    });
    let mut ready = [0u8; 1];
    container.control().read_exact(&mut ready).unwrap();
    let ports = bind_ports(&[published(Protocol::Tcp, 5201)]).unwrap();
    let host_port = ports.local_addrs()[0].port();
    let factory = ChildFactory(container.control.take().unwrap());
    let tun = container.tun.take().unwrap();
    let stack = start(tun, options(true), ports, Some(Box::new(factory))).unwrap();
    let (json, cpu) = measure(|| iperf_client("127.0.0.1", host_port, seconds, false));
    stack.stop().unwrap();
    container.finish();
    report_result("den_published", &json, cpu);
}
