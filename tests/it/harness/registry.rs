//! Real registries for the pull tests: CNCF distribution (Debian's
//! `docker-registry`) bound to 127.0.0.1, over http behind no auth,
//! htpasswd basic auth or a token server run in-process, or over https,
//! filled with `skopeo copy` from OCI layouts written by `harness::oci`.
//! Everything is bounded in time, and every process started here is
//! killed at drop (or at exit, for the fixtures a test process shares).
//!
//! Needs the Debian packages docker-registry, apache2-utils (htpasswd),
//! skopeo and openssl (`.ci/setup`).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::oci::{self, Compression, Layer, TarBuilder, busybox};

/// The account the basic-auth registries and the token server accept.
pub const USER: &str = "tester";
pub const PASSWORD: &str = "s3cret";
/// The token server's `service` and `issuer`.
pub const SERVICE: &str = "den-test-registry";
pub const ISSUER: &str = "den-test-issuer";

/// How long a registry, token server or skopeo may take to start or finish.
const STARTUP: Duration = Duration::from_secs(20);
const SKOPEO: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Cleanup at exit of what statics hold (they are never dropped).

static AT_EXIT: Mutex<(Vec<u32>, Vec<PathBuf>)> = Mutex::new((Vec::new(), Vec::new()));

extern "C" fn clean_at_exit() {
    let Ok(mut guard) = AT_EXIT.lock() else {
        return;
    };
    for pid in guard.0.drain(..) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    for dir in guard.1.drain(..) {
        let _ = fs::remove_dir_all(dir);
    }
}

fn at_exit_register() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // SAFETY: registers a plain extern "C" function.
        unsafe {
            libc::atexit(clean_at_exit);
        }
    });
}

fn kill_at_exit(pid: u32) {
    at_exit_register();
    AT_EXIT.lock().unwrap().0.push(pid);
}

fn forget_pid(pid: u32) {
    AT_EXIT.lock().unwrap().0.retain(|p| *p != pid);
}

/// Removes `dir` when the test process exits.
pub fn remove_at_exit(dir: PathBuf) {
    at_exit_register();
    AT_EXIT.lock().unwrap().1.push(dir);
}

/// A directory under /tmp for registry files (only the registry and the
/// test process, both root or the same user, read it).
pub fn scratch_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir")
}

// ---------------------------------------------------------------------------
// Small helpers.

#[track_caller]
fn run_ok(command: Command, limit: Duration) -> Vec<u8> {
    let what = format!("{command:?}");
    let output = super::run_bounded(command, limit);
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// base64url without padding, as JWTs use.
fn base64url(bytes: &[u8]) -> String {
    base64(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Deterministic bytes that do not compress (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A minimal HTTP/1.1 response.
pub struct Response {
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body))
        })
    }
}

/// `GET http://<addr><path>` with extra headers, one connection, bounded.
pub fn http_get(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..end]);
        let size =
            usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&raw[start..(start + size).min(raw.len())]);
        raw = &raw[(start + size + 2).min(raw.len())..];
    }
    out
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

// ---------------------------------------------------------------------------
// The registry.

/// How a registry authenticates clients.
pub enum Auth {
    /// Anyone may pull and push.
    Anonymous,
    /// htpasswd (bcrypt) with `USER`/`PASSWORD`.
    Basic,
    /// Bearer tokens from an in-process token server; with `credentials`,
    /// the server wants `USER`/`PASSWORD` (Basic) and answers 401 to
    /// anything else, otherwise it grants anonymous pulls.
    Token { credentials: bool },
}

/// The certificate and key a registry serves https with.
pub struct ServerCert<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// A `docker-registry serve` on 127.0.0.1, killed at drop.
pub struct Registry {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// Its storage root (`docker/registry/v2/…` lives below).
    pub storage: PathBuf,
    /// The token server, for `Auth::Token`.
    pub issuer: Option<TokenIssuer>,
    log: Arc<Mutex<Vec<String>>>,
    config_dir: PathBuf,
}

impl Registry {
    /// Starts a registry serving `storage` (several may share one) over
    /// plain http, and waits until `/v2/` answers.
    pub fn start(storage: &Path, auth: Auth) -> Registry {
        Registry::spawn(storage, auth, None)
    }

    /// Starts an anonymous registry serving `storage` over https with
    /// `cert`, and waits until it accepts connections.
    pub fn start_tls(storage: &Path, cert: ServerCert) -> Registry {
        Registry::spawn(storage, Auth::Anonymous, Some(cert))
    }

    fn spawn(storage: &Path, auth: Auth, tls: Option<ServerCert>) -> Registry {
        // Removed at drop, or at exit for a registry a static holds.
        let config_dir = scratch_dir("den-test-registry-config-").keep();
        remove_at_exit(config_dir.clone());
        let mut issuer = None;
        let auth_yaml = match auth {
            Auth::Anonymous => String::new(),
            Auth::Basic => {
                let mut command = Command::new("htpasswd");
                command.args(["-Bbn", USER, PASSWORD]);
                let entry = run_ok(command, STARTUP);
                let path = config_dir.join("htpasswd");
                fs::write(&path, entry).expect("write htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: den-test\n    path: {}\n",
                    path.display()
                )
            }
            Auth::Token { credentials } => {
                let server = TokenIssuer::start(credentials);
                let yaml = format!(
                    "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    server.realm(),
                    token_key().cert_path.display()
                );
                issuer = Some(server);
                yaml
            }
        };
        let tls_yaml = match &tls {
            Some(ServerCert { cert, key }) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:0\n  secret: den-test-secret\n\
             {tls_yaml}{auth_yaml}",
            storage.display()
        );
        let config_path = config_dir.join("config.yml");
        fs::write(&config_path, config).expect("write registry config");

        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start docker-registry (install it with .ci/setup)");
        kill_at_exit(child.id());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (send, listening) = mpsc::channel();
        {
            let stderr = child.stderr.take().expect("stderr");
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let addr: String = rest
                            .chars()
                            .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                            .collect();
                        let _ = send.send(addr);
                    }
                    let mut log = log.lock().unwrap();
                    if log.len() < 200 {
                        log.push(line);
                    }
                }
            });
        }
        let mut registry = Registry {
            child: Some(child),
            addr: String::new(),
            storage: storage.to_path_buf(),
            issuer,
            log,
            config_dir,
        };
        match listening.recv_timeout(STARTUP) {
            Ok(addr) => registry.addr = addr,
            Err(_) => panic!(
                "docker-registry did not report its address within {STARTUP:?}; log:\n{}",
                registry.log()
            ),
        }
        if tls.is_some() {
            registry.wait_until_accepting();
        } else {
            registry.wait_until_answering();
        }
        registry
    }

    /// Waits until plain-http `/v2/` answers (200, or 401 with auth).
    fn wait_until_answering(&self) {
        let deadline = Instant::now() + STARTUP;
        loop {
            match http_get(&self.addr, "/v2/", &[]) {
                Ok(response) if response.status == 200 || response.status == 401 => return,
                _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                other => panic!(
                    "registry at {} does not answer /v2/ ({:?}); log:\n{}",
                    self.addr,
                    other.map(|r| r.status),
                    self.log()
                ),
            }
        }
    }

    /// Waits until the port accepts connections (an https registry: this
    /// harness speaks no TLS).
    fn wait_until_accepting(&self) {
        let deadline = Instant::now() + STARTUP;
        while TcpStream::connect(&self.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry at {} does not accept connections; log:\n{}",
                self.addr,
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the registry logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `127.0.0.1:<port>/<repo>`.
    pub fn reference(&self, repo: &str) -> String {
        format!("{}/{repo}", self.addr)
    }

    /// Stops the registry (kill by pid) and waits for it; connections fail
    /// from now on.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            forget_pid(child.id());
        }
        let _ = fs::remove_dir_all(&self.config_dir);
    }

    /// The manifest (or index) `reference` (a tag or digest) of `repo`,
    /// fetched anonymously: (content type, digest header, parsed body).
    pub fn manifest(&self, repo: &str, reference: &str) -> (String, String, Value) {
        let response = http_get(
            &self.addr,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Accept", MANIFEST_TYPES)],
        )
        .expect("GET manifest");
        assert_eq!(
            response.status,
            200,
            "GET manifest {repo}:{reference}: {}",
            String::from_utf8_lossy(&response.body)
        );
        let digest = format!("sha256:{}", oci::sha256_hex(&response.body));
        (
            response.header("content-type").unwrap_or("").to_string(),
            digest,
            response.json(),
        )
    }

    /// The file holding blob `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `skopeo --insecure-policy` command that sees none of the invoking
/// user's credentials or containers config: an empty auth file, and HOME
/// and XDG_RUNTIME_DIR in a private scratch directory.
pub fn skopeo() -> Command {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    let home = HOME.get_or_init(|| {
        let home = scratch_dir("den-test-skopeo-home-").keep();
        remove_at_exit(home.clone());
        fs::write(home.join("auth.json"), "{\"auths\":{}}").expect("write auth.json");
        home
    });
    let mut command = Command::new("skopeo");
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", home)
        .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
        .arg("--insecure-policy");
    command
}

/// `skopeo copy` of `oci:<layout>:<tag>` to `docker://<dest>`, with
/// `extra` flags (`--all`, `--format v2s2`, `--dest-creds u:p`).
pub fn push(layout: &Path, tag: &str, dest: &str, extra: &[&str]) {
    let mut command = skopeo();
    command
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"));
    run_ok(command, SKOPEO);
}

/// `skopeo copy` between two local layouts, recompressing with zstd (a
/// push with `--dest-compress-format` can silently reuse the gzip blob).
pub fn recompress_zstd(from: &Path, tag: &str, to: &Path) {
    let mut command = skopeo();
    command
        .args(["copy", "--quiet", "--dest-compress-format", "zstd"])
        .arg(format!("oci:{}:{tag}", from.display()))
        .arg(format!("oci:{}:{tag}", to.display()));
    run_ok(command, SKOPEO);
}

// ---------------------------------------------------------------------------
// The token server.

struct TokenKey {
    _dir: PathBuf,
    cert_path: PathBuf,
    /// base64 DER of the certificate, for the `x5c` header.
    x5c: String,
    pkcs8: Vec<u8>,
}

/// One P-256 key and self-signed certificate per test process (openssl).
fn token_key() -> &'static TokenKey {
    static KEY: OnceLock<TokenKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = scratch_dir("den-test-token-key-").keep();
        remove_at_exit(dir.clone());
        let key = dir.join("token.key");
        let cert_path = dir.join("token.crt");
        let pk8 = dir.join("token.pk8");
        let mut command = Command::new("openssl");
        command
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "3650"])
            .args(["-subj", "/CN=den-test-token", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert_path);
        run_ok(command, STARTUP);
        let mut command = Command::new("openssl");
        command
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&pk8);
        run_ok(command, STARTUP);
        let pem = fs::read_to_string(&cert_path).expect("read token.crt");
        let x5c: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        TokenKey {
            _dir: dir,
            cert_path,
            x5c,
            pkcs8: fs::read(&pk8).expect("read token.pk8"),
        }
    })
}

/// A token server on 127.0.0.1 (a std thread), stopped at drop. It signs
/// ES256 JWTs with an `x5c` header, granting what the scopes ask for.
pub struct TokenIssuer {
    addr: String,
    stop: Arc<AtomicBool>,
    /// Users whose Basic credentials it accepted, one per token.
    pub granted: Arc<Mutex<Vec<String>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl TokenIssuer {
    pub fn start(credentials: bool) -> TokenIssuer {
        let key = token_key();
        let rng = ring::rand::SystemRandom::new();
        let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.pkcs8,
            &rng,
        )
        .expect("token key");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let granted = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let stop = Arc::clone(&stop);
            let granted = Arc::clone(&granted);
            thread::spawn(move || {
                let serial = AtomicU64::new(0);
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = serve_token(stream, credentials, &pair, &rng, &serial, &granted);
                }
            })
        };
        TokenIssuer {
            addr,
            stop,
            granted,
            thread: Some(thread),
        }
    }

    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_token(
    mut stream: TcpStream,
    credentials: bool,
    pair: &ring::signature::EcdsaKeyPair,
    rng: &ring::rand::SystemRandom,
    serial: &AtomicU64,
    granted: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim().to_string();
            if name == "authorization" {
                authorization = Some(value);
            } else if name == "content-length" {
                content_length = value.parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; content_length.min(1 << 16)];
    reader.read_exact(&mut body)?;
    let target = request_line.split(' ').nth(1).unwrap_or("");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    // POST (refresh-token grant) carries its fields in the body.
    let form = format!("{query}&{}", String::from_utf8_lossy(&body));
    let mut scopes = Vec::new();
    for pair in form.split('&') {
        if let Some(("scope", value)) = pair.split_once('=') {
            scopes.extend(percent_decode(value).split(' ').map(str::to_string));
        }
    }
    let expected = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
    let user = match authorization {
        Some(header) if header == expected => USER.to_string(),
        Some(_) => {
            return respond(
                &mut stream,
                "401 Unauthorized",
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#,
            );
        }
        None if credentials => {
            return respond(
                &mut stream,
                "401 Unauthorized",
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"credentials required"}]}"#,
            );
        }
        None => String::new(),
    };
    let access: Vec<Value> = scopes
        .iter()
        .filter_map(|scope| {
            let rest = scope.strip_prefix("repository:")?;
            let (name, actions) = rest.rsplit_once(':')?;
            Some(serde_json::json!({
                "type": "repository",
                "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let now = unix_now();
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [token_key().x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user,
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("den-test-{}", serial.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        base64url(&serde_json::to_vec(&header).unwrap()),
        base64url(&serde_json::to_vec(&claims).unwrap())
    );
    let signature = pair
        .sign(rng, signing_input.as_bytes())
        .map_err(|_| std::io::Error::other("sign"))?;
    let token = format!("{signing_input}.{}", base64url(signature.as_ref()));
    if !user.is_empty() {
        granted.lock().unwrap().push(user);
    }
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": 300,
    });
    respond(&mut stream, "200 OK", &body.to_string())
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let extra = if status.starts_with("401") {
        "WWW-Authenticate: Basic realm=\"den-test-token\"\r\n"
    } else {
        ""
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

// ---------------------------------------------------------------------------
// A proxy that can stall.

/// A TCP splice proxy on 127.0.0.1 in front of `upstream`. While `stall`
/// is on, each connection forwards at most `limit` bytes to the client,
/// then holds the connection open without sending more (or, made with
/// `drop_once`, the first connection to reach `limit` is closed there and
/// all others pass untouched).
pub struct StallProxy {
    pub addr: String,
    drop_once: bool,
    stall: Arc<AtomicBool>,
    stalled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl StallProxy {
    pub fn start(upstream: &str, limit: u64) -> StallProxy {
        StallProxy::spawn(upstream, limit, false)
    }

    /// Closes the first connection that reaches `limit` bytes (a dropped
    /// transfer a client must retry); forwards everything else.
    pub fn drop_once(upstream: &str, limit: u64) -> StallProxy {
        StallProxy::spawn(upstream, limit, true)
    }

    fn spawn(upstream: &str, limit: u64, drop_once: bool) -> StallProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().unwrap().to_string();
        let stall = Arc::new(AtomicBool::new(true));
        let stalled = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_string();
        {
            let (stall, stalled, stop) = (stall.clone(), stalled.clone(), stop.clone());
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    let (stall, stalled, stop) = (stall.clone(), stalled.clone(), stop.clone());
                    let (Ok(client_read), Ok(server_write)) =
                        (client.try_clone(), server.try_clone())
                    else {
                        continue;
                    };
                    thread::spawn(move || copy_plain(client_read, server_write));
                    thread::spawn(move || {
                        let limits = Limits {
                            limit,
                            drop_once,
                            stall: &stall,
                            stalled: &stalled,
                            stop: &stop,
                        };
                        copy_limited(server, client, limits)
                    });
                }
            });
        }
        StallProxy {
            addr,
            drop_once,
            stall,
            stalled,
            stop,
        }
    }

    /// Whether some connection hit the limit (and is being held, or was
    /// dropped).
    pub fn has_stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }

    /// From now on, forward everything (held connections are closed).
    pub fn heal(&self) {
        assert!(!self.drop_once, "a drop_once proxy has nothing to heal");
        self.stall.store(false, Ordering::SeqCst);
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn copy_plain(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

struct Limits<'a> {
    limit: u64,
    drop_once: bool,
    stall: &'a AtomicBool,
    stalled: &'a AtomicBool,
    stop: &'a AtomicBool,
}

fn copy_limited(mut from: TcpStream, mut to: TcpStream, limits: Limits) {
    let Limits {
        limit,
        drop_once,
        stall,
        stalled,
        stop,
    } = limits;
    let mut sent = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 {
            break;
        }
        let mut chunk = &buffer[..n];
        let over = sent + n as u64 > limit;
        if over
            && drop_once
            && stalled
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            let allowed = (limit - sent.min(limit)) as usize;
            let _ = to.write_all(&chunk[..allowed]);
            break;
        }
        if over && !drop_once && stall.load(Ordering::SeqCst) {
            let allowed = (limit - sent.min(limit)) as usize;
            chunk = &chunk[..allowed];
            if to.write_all(chunk).is_err() {
                break;
            }
            stalled.store(true, Ordering::SeqCst);
            // Hold the connection until healed or stopped, then drop it.
            while stall.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
            }
            break;
        }
        if to.write_all(chunk).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// Fixture images.

/// The host's OCI architecture and variant (arm64 images say `v8`).
pub fn host_platform() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "aarch64" => ("arm64", Some("v8")),
        other => panic!("no fixture platform for {other}"),
    }
}

/// The platform of the multi-arch fixture's image the host cannot run.
pub fn other_platform() -> (&'static str, Option<&'static str>) {
    match host_platform().0 {
        "amd64" => ("arm64", Some("v8")),
        _ => ("amd64", None),
    }
}

fn gz(tar: Vec<u8>) -> Layer {
    Layer {
        tar,
        compression: Compression::Gzip,
    }
}

/// Layer 2 of `multi`: files layer 3 deletes.
pub fn doomed_layer() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/gone", 0o644, b"deleted above\n")
        .file("etc/kept", 0o644, b"kept\n")
        .dir("opq/", 0o755)
        .file("opq/old", 0o644, b"old\n")
        .finish()
}

/// Layer 3 of `multi`: a whiteout and an opaque directory.
pub fn whiteout_layer() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc/", 0o755)
        .file("etc/.wh.gone", 0o644, b"")
        .dir("opq/", 0o755)
        .file("opq/.wh..wh..opq", 0o644, b"")
        .file("opq/new", 0o644, b"new\n")
        .finish()
}

fn marker_layer(path: &str, contents: &str) -> Vec<u8> {
    TarBuilder::new()
        .file(path, 0o644, contents.as_bytes())
        .finish()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).expect("read json")).expect("parse json")
}

fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let hex = oci::sha256_hex(bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), bytes).expect("write blob");
    (format!("sha256:{hex}"), bytes.len())
}

fn blob(layout: &Path, digest: &str) -> Value {
    read_json(
        &layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
}

fn platform_json(platform: (&str, Option<&str>)) -> Value {
    let mut value = serde_json::json!({"os": "linux", "architecture": platform.0});
    if let Some(variant) = platform.1 {
        value["variant"] = variant.into();
    }
    value
}

/// Writes image `tag` into `layout` for `platform`; returns the manifest
/// descriptor (with its platform).
fn write_platform_image(
    layout: &Path,
    tag: &str,
    layers: &[Layer],
    platform: (&str, Option<&str>),
) -> Value {
    oci::write_layout(layout, tag, layers, &["PATH=/bin"], &["sh"]);
    let index = read_json(&layout.join("index.json"));
    let mut manifest = blob(layout, index["manifests"][0]["digest"].as_str().unwrap());
    let mut config = blob(layout, manifest["config"]["digest"].as_str().unwrap());
    config["architecture"] = platform.0.into();
    if let Some(variant) = platform.1 {
        config["variant"] = variant.into();
    }
    let (digest, size) = put_blob(layout, &serde_json::to_vec(&config).unwrap());
    manifest["config"]["digest"] = digest.into();
    manifest["config"]["size"] = size.into();
    let (digest, size) = put_blob(layout, &serde_json::to_vec(&manifest).unwrap());
    serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": digest,
        "size": size,
        "platform": platform_json(platform),
    })
}

/// An image the shared registry serves, as pushed.
#[derive(Clone, Debug)]
pub struct Pushed {
    /// Repository name on the registry.
    pub repo: String,
    /// Diff IDs (hex) of its layers, bottom first.
    pub diff_ids: Vec<String>,
}

/// The images every test of a process shares, pushed once to one storage
/// dir served by `registry` (anonymous). More registries (basic, token)
/// can serve the same storage.
pub struct Fixtures {
    pub registry: Registry,
    /// busybox + `doomed_layer` + `whiteout_layer`, gzip.
    pub multi: Pushed,
    /// `multi` recompressed with zstd.
    pub zstd: Pushed,
    /// `multi` as a Docker v2s2 manifest.
    pub v2s2: Pushed,
    /// An index (repo `mx`): the host's image has `/arch-marker`, the
    /// other platform's has `/other-arch-marker`.
    pub mx_host: Pushed,
    pub mx_other: Pushed,
    /// busybox + a layer no other repo has (for corruption tests).
    pub corrupt: Pushed,
    /// busybox + an 8 MiB incompressible layer.
    pub big: Pushed,
    /// An image of its own (unique config), for manifest tampering.
    pub tampered: Pushed,
    /// busybox + a unique layer (gzip, fast), whose uncompressed tar is
    /// `regzip_tar`: for a blob swapped for another gzip of the same tar.
    pub regzip: Pushed,
    pub regzip_tar: Vec<u8>,
}

impl Fixtures {
    pub fn storage(&self) -> &Path {
        &self.registry.storage
    }
}

/// The shared fixtures, built on first use (a few seconds).
pub fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(build_fixtures)
}

fn diff_ids(layers: &[Layer]) -> Vec<String> {
    layers.iter().map(|l| oci::sha256_hex(&l.tar)).collect()
}

fn pushed(repo: &str, layers: &[Layer]) -> Pushed {
    Pushed {
        repo: repo.to_string(),
        diff_ids: diff_ids(layers),
    }
}

fn build_fixtures() -> Fixtures {
    let work = scratch_dir("den-test-registry-fixtures-");
    let storage = scratch_dir("den-test-registry-storage-").keep();
    remove_at_exit(storage.clone());
    let registry = Registry::start(&storage, Auth::Anonymous);
    let dest = |repo: &str| format!("{}/{repo}:latest", registry.addr);

    let multi_layers = [busybox(), gz(doomed_layer()), gz(whiteout_layer())];
    let multi_dir = work.path().join("multi");
    oci::write_layout(&multi_dir, "latest", &multi_layers, &["PATH=/bin"], &["sh"]);
    push(&multi_dir, "latest", &dest("multi"), &[]);
    push(&multi_dir, "latest", &dest("v2s2"), &["--format", "v2s2"]);
    let zstd_dir = work.path().join("zstd");
    recompress_zstd(&multi_dir, "latest", &zstd_dir);
    push(&zstd_dir, "latest", &dest("zstd"), &[]);

    let mx_dir = work.path().join("mx");
    let host_layers = [
        busybox(),
        gz(marker_layer(
            "arch-marker",
            &format!("{}\n", host_platform().0),
        )),
    ];
    let other_layers = [
        busybox(),
        gz(marker_layer(
            "other-arch-marker",
            &format!("{}\n", other_platform().0),
        )),
    ];
    let host = write_platform_image(&mx_dir, "host", &host_layers, host_platform());
    let other = write_platform_image(&mx_dir, "other", &other_layers, other_platform());
    let nested = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [host, other],
    });
    let (digest, size) = put_blob(&mx_dir, &serde_json::to_vec(&nested).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    fs::write(
        mx_dir.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    push(&mx_dir, "latest", &dest("mx"), &["--all"]);

    let unique = format!("{:?} {}", SystemTime::now(), std::process::id());
    let corrupt_layers = [
        busybox(),
        gz(TarBuilder::new()
            .file("unique", 0o644, unique.as_bytes())
            .file("noise", 0o644, &noise(256 * 1024, 7))
            .finish()),
    ];
    let corrupt_dir = work.path().join("corrupt");
    oci::write_layout(
        &corrupt_dir,
        "latest",
        &corrupt_layers,
        &["PATH=/bin"],
        &["sh"],
    );
    push(&corrupt_dir, "latest", &dest("corrupt"), &[]);

    let big_layers = [
        busybox(),
        gz(TarBuilder::new()
            .file("big", 0o644, &noise(8 << 20, 11))
            .finish()),
    ];
    let big_dir = work.path().join("big");
    oci::write_layout(&big_dir, "latest", &big_layers, &["PATH=/bin"], &["sh"]);
    push(&big_dir, "latest", &dest("big"), &[]);

    // The storage is the registry's (root's when tests run as root); make
    // it readable for checks, never writable for den.
    let _ = fs::set_permissions(&storage, fs::Permissions::from_mode(0o755));

    let tampered_dir = work.path().join("tampered");
    let tampered_layers = [busybox()];
    let unique_env = format!("DEN_TEST_UNIQUE={unique}");
    oci::write_layout(
        &tampered_dir,
        "latest",
        &tampered_layers,
        &["PATH=/bin", &unique_env],
        &["sh"],
    );
    push(&tampered_dir, "latest", &dest("tampered"), &[]);

    let regzip_tar = TarBuilder::new()
        .file("regzip", 0o644, format!("{unique} regzip\n").as_bytes())
        .file("noise", 0o644, &noise(64 * 1024, 13))
        .finish();
    let regzip_layers = [busybox(), gz(regzip_tar.clone())];
    let regzip_dir = work.path().join("regzip");
    oci::write_layout(
        &regzip_dir,
        "latest",
        &regzip_layers,
        &["PATH=/bin"],
        &["sh"],
    );
    push(&regzip_dir, "latest", &dest("regzip"), &[]);

    Fixtures {
        regzip: pushed("regzip", &regzip_layers),
        regzip_tar,
        tampered: pushed("tampered", &tampered_layers),
        multi: pushed("multi", &multi_layers),
        zstd: pushed("zstd", &multi_layers),
        v2s2: pushed("v2s2", &multi_layers),
        mx_host: pushed("mx", &host_layers),
        mx_other: pushed("mx", &other_layers),
        corrupt: pushed("corrupt", &corrupt_layers),
        big: pushed("big", &big_layers),
        registry,
    }
}

/// Writes `auths.<host>.auth` for `user:password` into `path` (an
/// auth.json or a docker config.json), creating its directory.
pub fn write_auth_file(path: &Path, host: &str, user: &str, password: &str) {
    fs::create_dir_all(path.parent().unwrap()).expect("create auth dir");
    let auth = serde_json::json!({
        "auths": { host: { "auth": base64(format!("{user}:{password}").as_bytes()) } }
    });
    fs::write(path, serde_json::to_vec_pretty(&auth).unwrap()).expect("write auth file");
}
