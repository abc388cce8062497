//! `network: slirp` through den, as the unprivileged test user: with
//! `host-loopback: true`, the container reaches servers on the host's
//! 127.0.0.1 through the gateway 10.0.2.2 (and `host.den.internal`);
//! by default it reaches none. It resolves names through den's DNS
//! forwarder, moves 100 MB each way intact, holds 200 connections at
//! once; published TCP ports reach a server in the container; with the
//! gateway off (the default) or `network: none`, nothing is reached. The
//! stack's own tests (UDP echo, published UDP ports) are in
//! `network_stack`, which drives it without den.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::oci;
use crate::harness::spawned::Spawned;
use crate::harness::{self, Project, Runner, bounded, success, text};
use sha2::{Digest, Sha256};

const BLOB_SIZE: usize = 100 << 20;

const DEN_YAML: &str = "\
containers:
  bb:
    from: oci:image:latest
    host-loopback: true
  isolated:
    from: oci:image:latest
  offline:
    from: oci:image:latest
    network: none
";

fn project() -> Project {
    let project = Project::new(DEN_YAML);
    oci::write_busybox(&project.root.join("image"));
    project.hand_over();
    project
}

/// Deterministic bytes for the download, made once.
fn blob() -> &'static [u8] {
    static BLOB: OnceLock<Vec<u8>> = OnceLock::new();
    BLOB.get_or_init(make_blob)
}

fn make_blob() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..BLOB_SIZE)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A raw TCP sink on 127.0.0.1: reads `BLOB_SIZE` bytes, answers their
/// sha256 and count, closes. (busybox wget cannot post binary data.)
fn sink() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut hasher = Sha256::new();
                let mut left = BLOB_SIZE;
                let mut buffer = vec![0u8; 1 << 16];
                while left > 0 {
                    match stream.read(&mut buffer[..left.min(1 << 16)]) {
                        Ok(0) | Err(_) => break,
                        Ok(count) => {
                            hasher.update(&buffer[..count]);
                            left -= count;
                        }
                    }
                }
                let answer = format!("{} {}\n", hex(&hasher.finalize()), BLOB_SIZE - left);
                let _ = stream.write_all(answer.as_bytes());
            });
        }
    });
    port
}

/// A small HTTP/1.0 server on 127.0.0.1: `GET /hello` and `GET /blob`
/// (the 100 MB blob).
fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || answer(stream));
        }
    });
    port
}

fn answer(stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
    }
    let body: Vec<u8> = if request.starts_with("GET /blob") {
        blob().to_vec()
    } else {
        b"hello from the host\n".to_vec()
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

fn sh(project: &Project, container: &str, script: &str) -> std::process::Output {
    bounded(project.den(Runner::User, &["exec", container, "--", "sh", "-c", script]))
}

#[test]
fn the_container_reaches_the_hosts_loopback_through_the_gateway() {
    let project = project();
    let port = serve();
    let out = success(&sh(
        &project,
        "bb",
        &format!(
            "timeout 20 wget -qO- http://10.0.2.2:{port}/hello; \
             timeout 20 wget -qO- http://host.den.internal:{port}/hello; \
             cat /etc/resolv.conf"
        ),
    ));
    assert_eq!(
        out,
        "hello from the host\nhello from the host\nnameserver 10.0.2.3\n"
    );
}

#[test]
fn names_resolve_through_the_dns_forwarder() {
    let project = project();
    // A name the host's own resolver answers (this machine reaches
    // Debian's archive).
    let host = std::process::Command::new("getent")
        .args(["hosts", "deb.debian.org"])
        .output()
        .unwrap();
    assert!(host.status.success(), "the host resolves deb.debian.org");
    let out = sh(
        &project,
        "bb",
        "timeout 20 nslookup deb.debian.org 10.0.2.3",
    );
    let said = success(&out);
    let address = text(&host.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(said.contains(&address), "{said} lacks {address}");
}

#[test]
fn a_hundred_megabytes_each_way_arrive_intact() {
    let project = project();
    let (port, sink) = (serve(), sink());
    let expected = hex(&Sha256::digest(blob()));
    let script = format!(
        "set -e
         timeout 120 wget -qO- http://10.0.2.2:{port}/blob | sha256sum
         head -c {BLOB_SIZE} /dev/urandom > /tmp/up
         sha256sum /tmp/up
         timeout 120 nc 10.0.2.2 {sink} < /tmp/up"
    );
    let started = Instant::now();
    let out = success(&sh(&project, "bb", &script));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with(&expected), "download: {out}");
    let sent = lines[1].split_whitespace().next().unwrap();
    assert_eq!(lines[2], format!("{sent} {BLOB_SIZE}"), "upload: {out}");
    eprintln!("200 MB moved in {:?}", started.elapsed());
}

#[test]
fn two_hundred_connections_at_once() {
    let project = project();
    let port = serve();
    let script = format!(
        "i=0
         while [ $i -lt 200 ]; do
           timeout 60 wget -qO /tmp/out.$i http://10.0.2.2:{port}/hello &
           i=$((i+1))
         done
         wait
         cat /tmp/out.* | sort | uniq -c"
    );
    let out = success(&sh(&project, "bb", &script));
    assert_eq!(out.trim(), "200 hello from the host", "{out}");
}

#[test]
fn without_the_gateway_or_a_network_nothing_is_reached() {
    let project = project();
    let port = serve();
    let probe = format!("timeout 10 wget -qO- http://10.0.2.2:{port}/hello && echo reached");
    let isolated = sh(&project, "isolated", &probe);
    assert!(!text(&isolated.stdout).contains("reached"), "{isolated:?}");
    let offline = sh(&project, "offline", &probe);
    assert!(!text(&offline.stdout).contains("reached"), "{offline:?}");
    // --network on the command line overrides den.yaml.
    let host = bounded(project.den(
        Runner::User,
        &[
            "exec",
            "--network",
            "host",
            "offline",
            "--",
            "sh",
            "-c",
            &format!("timeout 10 wget -qO- http://127.0.0.1:{port}/hello"),
        ],
    ));
    assert_eq!(success(&host), "hello from the host\n");
}

#[test]
fn a_published_port_reaches_a_server_in_the_container() {
    let project = project();
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut server = Spawned::start(project.den(
        Runner::User,
        &[
            "exec",
            "-p",
            &format!("{port}:8080"),
            "bb",
            "--",
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo served from the container > /tmp/www/index.html && \
             echo ready && exec httpd -f -p 8080 -h /tmp/www",
        ],
    ));
    server.expect_line("ready");
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let attempt = TcpStream::connect(("127.0.0.1", port)).and_then(|mut stream| {
            stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        });
        match attempt {
            Ok(response) if response.contains("served from the container") => break response,
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            other => panic!("no answer through the published port: {other:?}"),
        }
    };
    assert!(body.starts_with("HTTP/1."), "{body}");
    // The port is taken while the container runs: a second den says so
    // before starting anything.
    let clash = bounded(project.den(
        Runner::User,
        &["exec", "-p", &format!("{port}:80"), "bb", "--", "true"],
    ));
    harness::refused(&clash, &[&format!("port {port} is already in use")]);
}
