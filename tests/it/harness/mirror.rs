//! A Debian mirror on 127.0.0.1 for the bootstrap tests: a small
//! HTTP/1.1 server (GET only, one thread per connection, every answer
//! with Content-Length and `Connection: close`) serving `/debian/...`
//! from an on-disk copy that it fills on demand from the real
//! `http://deb.debian.org/debian/...` (plain TCP to deb.debian.org:80,
//! the only outside address it contacts; HTTP/1.1 with `Connection:
//! close`, as the CDN answers HTTP/1.0 with 426 Upgrade Required).
//!
//! The copy lives in `/var/tmp/den-test-mirror` (or `$DEN_TEST_MIRROR`),
//! shared by every test and test process on the machine and written by
//! temporary file + rename, so each file comes from Debian once per
//! machine. Files under `dists/` outside `by-hash/` (InRelease) change
//! when Debian updates a suite: each `Mirror` fetches them afresh once
//! and keeps its own copy, so one mirror serves one consistent suite;
//! the disk copy is only a fallback when Debian cannot be reached.
//! `by-hash/` files (checked against their name) and pool files are
//! immutable and never fetched twice.
//!
//! A test can make the mirror lie (`tamper`) and hold .deb transfers
//! (`hold_debs_after`), and sees which paths were served (`requests`).
//! What it serves is altered in flight; the copy on disk never is.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Where Debian is fetched from, and how.
const UPSTREAM_HOST: &str = "deb.debian.org";
const UPSTREAM_PORT: u16 = 80;
const UPSTREAM_ATTEMPTS: u32 = 3;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest file fetched from Debian (Packages.xz is ~9 MB).
const UPSTREAM_MAX: usize = 256 << 20;
/// How long a client may take to send its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A lie the mirror tells; the copy on disk stays intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// One character of InRelease's `Codename:` line (inside the signed
    /// text) changed.
    InRelease,
    /// One byte of every `Packages.xz`/`.gz` (by-hash or not) flipped.
    PackagesIndex,
    /// One byte of the .deb of this package (`pool/…/<name>_*.deb`) flipped.
    Deb(String),
}

/// The running mirror; stops accepting (and releases held transfers)
/// when dropped.
pub struct Mirror {
    port: u16,
    state: Arc<State>,
}

struct State {
    dir: PathBuf,
    stopped: AtomicBool,
    /// This mirror's own copies of the suite's mutable files.
    fresh: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    tampers: Mutex<Vec<Tamper>>,
    /// Paths whose answer was written out in full, in order.
    served: Mutex<Vec<String>>,
    /// .deb requests received so far.
    debs_asked: AtomicU64,
    hold: Mutex<Hold>,
    released: Condvar,
}

#[derive(Default)]
struct Hold {
    /// .deb requests beyond this many wait until `release_debs`.
    after: Option<u64>,
    /// How many requests are waiting now.
    waiting: u64,
}

impl Mirror {
    /// Starts a mirror on a free port of 127.0.0.1.
    pub fn start() -> Mirror {
        let dir = mirror_dir();
        fs::create_dir_all(dir.join(".tmp")).expect("create the mirror directory");
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o755));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the mirror");
        let port = listener.local_addr().expect("mirror address").port();
        let state = Arc::new(State {
            dir,
            stopped: AtomicBool::new(false),
            fresh: Mutex::new(HashMap::new()),
            tampers: Mutex::new(Vec::new()),
            served: Mutex::new(Vec::new()),
            debs_asked: AtomicU64::new(0),
            hold: Mutex::new(Hold::default()),
            released: Condvar::new(),
        });
        let accepting = Arc::clone(&state);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = Arc::clone(&accepting);
                thread::spawn(move || {
                    let _ = serve(&state, stream);
                });
            }
        });
        Mirror { port, state }
    }

    /// The archive root to put in `mirror:`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/debian", self.port)
    }

    /// From now on, tells this lie too.
    pub fn tamper(&self, tamper: Tamper) {
        self.state.tampers.lock().unwrap().push(tamper);
    }

    /// Paths (as requested, such as `/debian/pool/…`) answered in full.
    pub fn requests(&self) -> Vec<String> {
        self.state.served.lock().unwrap().clone()
    }

    /// How many .deb files were served in full.
    pub fn debs_served(&self) -> usize {
        self.requests()
            .iter()
            .filter(|path| path.ends_with(".deb"))
            .count()
    }

    /// Serves the next `count` .deb requests, then keeps every further
    /// one waiting (connection open, no answer) until `release_debs`.
    pub fn hold_debs_after(&self, count: u64) {
        let asked = self.state.debs_asked.load(Ordering::SeqCst);
        self.state.hold.lock().unwrap().after = Some(asked + count);
    }

    /// How many .deb requests are being held now.
    pub fn debs_waiting(&self) -> u64 {
        self.state.hold.lock().unwrap().waiting
    }

    /// Answers the held requests and holds no more.
    pub fn release_debs(&self) {
        self.state.hold.lock().unwrap().after = None;
        self.state.released.notify_all();
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.release_debs();
        // Wakes the accept loop so it sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn mirror_dir() -> PathBuf {
    match std::env::var_os("DEN_TEST_MIRROR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from("/var/tmp/den-test-mirror"),
    }
}

// ---------------------------------------------------------------------------
// Serving.

fn serve(state: &State, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim_end().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // A proxy-style absolute URI names the same path.
    let path = target
        .strip_prefix("http://")
        .and_then(|rest| rest.find('/').map(|at| &rest[at..]))
        .unwrap_or(target);
    let path = path.split(['?', '#']).next().unwrap_or("").to_string();
    let mut stream = stream;
    if method != "GET" {
        return answer(&mut stream, "405 Method Not Allowed", b"GET only\n");
    }
    let Some(relative) = relative_path(&path) else {
        return answer(&mut stream, "404 Not Found", b"not in this mirror\n");
    };
    if path.ends_with(".deb") {
        wait_if_held(state);
        if state.stopped.load(Ordering::SeqCst) {
            let _ = stream.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    let body = match content(state, &relative) {
        Ok(Some(body)) => body,
        Ok(None) => return answer(&mut stream, "404 Not Found", b"not found\n"),
        Err(err) => {
            eprintln!("test mirror: {path}: {err}");
            let message = format!("{err}\n");
            return answer(&mut stream, "502 Bad Gateway", message.as_bytes());
        }
    };
    let body = tampered(state, &relative, body);
    answer(&mut stream, "200 OK", &body)?;
    state.served.lock().unwrap().push(path);
    Ok(())
}

/// `/debian/<rest>` → `<rest>`, refusing anything that leaves the copy.
fn relative_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/debian/")?;
    let relative = Path::new(rest);
    let plain = relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)));
    (plain && !rest.is_empty() && !rest.starts_with(".tmp")).then(|| rest.to_string())
}

fn answer(stream: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

fn wait_if_held(state: &State) {
    let asked = state.debs_asked.fetch_add(1, Ordering::SeqCst) + 1;
    let mut hold = state.hold.lock().unwrap();
    if hold.after.is_none_or(|after| asked <= after) {
        return;
    }
    hold.waiting += 1;
    while hold.after.is_some_and(|after| asked > after) && !state.stopped.load(Ordering::SeqCst) {
        hold = state.released.wait(hold).unwrap();
    }
    hold.waiting -= 1;
}

/// The file's bytes: this mirror's fresh copy for the suite's mutable
/// files, else the disk copy, filled from Debian if missing.
fn content(state: &State, relative: &str) -> Result<Option<Arc<Vec<u8>>>, String> {
    let on_disk = state.dir.join(relative);
    let mutable = relative.starts_with("dists/") && !relative.contains("/by-hash/");
    if mutable {
        let mut fresh = state.fresh.lock().unwrap();
        if let Some(body) = fresh.get(relative) {
            return Ok(Some(Arc::clone(body)));
        }
        let body = match upstream(relative) {
            Ok(Some(body)) => {
                store(&state.dir, &on_disk, &body)?;
                body
            }
            Ok(None) => return Ok(None),
            Err(err) => match fs::read(&on_disk) {
                Ok(body) => {
                    eprintln!("test mirror: {err}; serving the copy of {relative} on disk");
                    body
                }
                Err(_) => return Err(err),
            },
        };
        let body = Arc::new(body);
        fresh.insert(relative.to_string(), Arc::clone(&body));
        return Ok(Some(body));
    }
    if let Ok(body) = fs::read(&on_disk) {
        return Ok(Some(Arc::new(body)));
    }
    let Some(body) = upstream(relative)? else {
        return Ok(None);
    };
    if let Some(expected) = by_hash_sha256(relative) {
        let found = hex(ring::digest::digest(&ring::digest::SHA256, &body).as_ref());
        if found != expected {
            return Err(format!(
                "{UPSTREAM_HOST} sent {relative} with sha256 {found}"
            ));
        }
    }
    store(&state.dir, &on_disk, &body)?;
    Ok(Some(Arc::new(body)))
}

fn by_hash_sha256(relative: &str) -> Option<String> {
    let (_, hash) = relative.rsplit_once("/by-hash/SHA256/")?;
    Some(hash.to_ascii_lowercase())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `body` at `path` through a temporary file and a rename, so
/// other test processes see the whole file or none.
fn store(dir: &Path, path: &Path, body: &[u8]) -> Result<(), String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let fail = |what: &str, err: std::io::Error| format!("{what} {}: {err}", path.display());
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|err| fail("cannot create the directory of", err))?;
    }
    let temp = dir.join(".tmp").join(format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    fs::write(&temp, body).map_err(|err| fail("cannot write", err))?;
    let _ = fs::set_permissions(&temp, fs::Permissions::from_mode(0o644));
    fs::rename(&temp, path).map_err(|err| {
        let _ = fs::remove_file(&temp);
        fail("cannot rename into", err)
    })
}

/// The lies told about this file.
fn tampered(state: &State, relative: &str, body: Arc<Vec<u8>>) -> Vec<u8> {
    let mut body = body.as_ref().clone();
    let name = relative.rsplit('/').next().unwrap_or(relative);
    for tamper in state.tampers.lock().unwrap().iter() {
        match tamper {
            Tamper::InRelease if name == "InRelease" => change_codename(&mut body),
            Tamper::PackagesIndex
                if relative.starts_with("dists/")
                    && (relative.contains("/by-hash/") || name.starts_with("Packages.")) =>
            {
                flip_middle_byte(&mut body)
            }
            Tamper::Deb(package)
                if name.starts_with(&format!("{package}_")) && name.ends_with(".deb") =>
            {
                flip_middle_byte(&mut body)
            }
            _ => {}
        }
    }
    body
}

/// `Codename: bookworm` → `Codename: bookwora` (a letter changed).
fn change_codename(body: &mut [u8]) {
    let text = String::from_utf8_lossy(body).into_owned();
    let start = text
        .find("\nCodename: ")
        .expect("InRelease has a Codename line")
        + 1;
    let end = start + text[start..].find('\n').expect("a line end");
    let last = end - 1;
    body[last] = if body[last] == b'a' { b'b' } else { b'a' };
}

fn flip_middle_byte(body: &mut [u8]) {
    if !body.is_empty() {
        let at = body.len() / 2;
        body[at] ^= 0x01;
    }
}

// ---------------------------------------------------------------------------
// Fetching from Debian: HTTP/1.1 over plain TCP, one request per
// connection, the body up to EOF (or in chunks).

/// `relative` from deb.debian.org: `None` if it answers 404.
fn upstream(relative: &str) -> Result<Option<Vec<u8>>, String> {
    let mut last = String::new();
    for attempt in 1..=UPSTREAM_ATTEMPTS {
        match upstream_once(relative) {
            Ok(found) => return Ok(found),
            Err(err) => last = err,
        }
        if attempt < UPSTREAM_ATTEMPTS {
            thread::sleep(Duration::from_secs(u64::from(attempt)));
        }
    }
    Err(format!(
        "cannot fetch http://{UPSTREAM_HOST}/debian/{relative}: {last}"
    ))
}

fn upstream_once(relative: &str) -> Result<Option<Vec<u8>>, String> {
    let addresses: Vec<_> = (UPSTREAM_HOST, UPSTREAM_PORT)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {UPSTREAM_HOST}: {err}"))?
        .collect();
    let mut stream = None;
    let mut error = format!("{UPSTREAM_HOST} has no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, UPSTREAM_TIMEOUT) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(err) => error = format!("cannot connect to {address}: {err}"),
        }
    }
    let mut stream = stream.ok_or(error)?;
    let io = |err: std::io::Error| err.to_string();
    stream
        .set_read_timeout(Some(UPSTREAM_TIMEOUT))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(UPSTREAM_TIMEOUT))
        .map_err(io)?;
    let request = format!(
        "GET /debian/{relative} HTTP/1.1\r\nHost: {UPSTREAM_HOST}\r\n\
         User-Agent: den-test-mirror\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut response = Vec::new();
    stream
        .take(UPSTREAM_MAX as u64 + 65536)
        .read_to_end(&mut response)
        .map_err(io)?;
    let head_end = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or("no complete response head")?;
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    let mut body = response.split_off(head_end + 4);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line `{status_line}`"))?;
    match status {
        200 => {}
        404 | 410 => return Ok(None),
        _ => return Err(format!("answered `{status_line}`")),
    }
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length `{value}`"))?,
            );
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("chunked") {
                return Err(format!("unexpected Transfer-Encoding `{value}`"));
            }
            body = dechunk(&body)?;
        }
    }
    if let Some(length) = length
        && length != body.len()
    {
        return Err(format!("sent {} of {length} bytes", body.len()));
    }
    if body.len() > UPSTREAM_MAX {
        return Err("file too large".to_string());
    }
    Ok(Some(body))
}

/// A chunked body, all of it (a missing last chunk is an error).
fn dechunk(mut bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = bytes
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("a chunk size line is cut off")?;
        let size_text = String::from_utf8_lossy(&bytes[..line_end]).into_owned();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size `{size_text}`"))?;
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if bytes.len() < size + 2 {
            return Err("a chunk is cut off".to_string());
        }
        body.extend_from_slice(&bytes[..size]);
        bytes = &bytes[size + 2..];
    }
}
