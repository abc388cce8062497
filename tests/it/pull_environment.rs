//! Pulls under the host's conditions, with the real `den` binary as the
//! test user against real registries on 127.0.0.1: TLS trust
//! (`SSL_CERT_FILE`, the system store), proxies (`HTTP_PROXY`,
//! `HTTPS_PROXY`, `NO_PROXY`; loopback always direct), insecure registries
//! from the settings file, a full disk, and progress with and without a
//! terminal. `registry_pull` covers what a pull fetches and verifies.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::registry::{self, Registry, ServerCert, fixtures};
use crate::harness::{
    self, DEN_FAILED, DEN_TIME_LIMIT, Project, Runner, bounded, refused_any_case, text,
};

fn project() -> Project {
    Project::new("containers: {}\n")
}

/// `den pull <args>` as the test user, with extra environment.
fn pull(project: &Project, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut full = vec!["pull"];
    full.extend_from_slice(args);
    let mut command = project.den_in(Runner::User, &project.home, &full);
    for (name, value) in env {
        command.env(name, value);
    }
    bounded(command)
}

fn has_layers(data: &Path, image: &registry::Pushed) -> bool {
    image
        .diff_ids
        .iter()
        .all(|d| data.join("layers").join(d).join("fs").is_dir())
}

// ---------------------------------------------------------------------------
// TLS: an openssl CA, a server certificate for 127.0.0.1 and localhost,
// and docker-registry with `http.tls`, serving the shared fixtures.

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    /// A registry serving `storage` over https with this certificate.
    fn registry(&self, storage: &Path) -> Registry {
        let cert = ServerCert {
            cert: &self.cert,
            key: &self.key,
        };
        Registry::start_tls(storage, cert)
    }
}

fn openssl(args: &[&str], dir: &Path) {
    let mut command = Command::new("openssl");
    command.args(args).current_dir(dir);
    let output = harness::run_bounded(command, Duration::from_secs(30));
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        text(&output.stderr)
    );
}

fn pki() -> Pki {
    let dir = registry::scratch_dir("den-test-tls-").keep();
    registry::remove_at_exit(dir.clone());
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-days",
        "2",
        "-subj",
        "/CN=den-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca, &dir);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&csr, &dir);
    fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
        &dir,
    );
    for file in ["ca.crt", "server.crt", "server.key"] {
        fs::set_permissions(dir.join(file), fs::Permissions::from_mode(0o644)).unwrap();
    }
    Pki {
        ca: dir.join("ca.crt"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    }
}

#[test]
fn loopback_tls_registry_is_verified_against_ssl_cert_file() {
    let fx = fixtures();
    let pki = pki();
    let tls = pki.registry(fx.storage());
    let project = project();
    let ca = pki.ca.to_str().unwrap();

    // Without the CA: a clear refusal naming the certificate.
    let reference = format!("{}/{}:latest", tls.addr, fx.multi.repo);
    let output = pull(&project, &[], &["--quiet", &reference]);
    refused_any_case(
        &output,
        &["not trusted", "certificate", "SSL_CERT_FILE", &tls.addr],
    );
    assert_eq!(
        harness::sorted_names(&project.data.join("images")),
        Vec::<String>::new()
    );

    // With it, by IP and by name.
    let output = pull(&project, &[("SSL_CERT_FILE", ca)], &["--quiet", &reference]);
    let stdout = harness::success(&output);
    assert!(
        stdout.starts_with(&format!("pulled {reference} sha256:")),
        "{stdout}"
    );
    assert!(has_layers(&project.data, &fx.multi));

    let port = tls.addr.rsplit(':').next().unwrap();
    let by_name = format!("localhost:{port}/{}:latest", fx.zstd.repo);
    let output = pull(&project, &[("SSL_CERT_FILE", ca)], &[&by_name]);
    let stdout = harness::success(&output);
    assert!(stdout.contains("resolving "), "{stdout}");
    assert!(has_layers(&project.data, &fx.zstd));
}

// ---------------------------------------------------------------------------
// Proxy: a counting CONNECT / absolute-form proxy on 127.0.0.1 that sends
// every host to 127.0.0.1 (so `den-test-registry` resolves only through it).

struct CountingProxy {
    addr: String,
    requests: Arc<AtomicU64>,
}

impl CountingProxy {
    fn start() -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&requests);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let counter = Arc::clone(&counter);
                thread::spawn(move || {
                    let _ = proxy_one(client, &counter);
                });
            }
        });
        CountingProxy { addr, requests }
    }
}

fn proxy_one(mut client: TcpStream, counter: &AtomicU64) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let target = head.split(' ').nth(1).unwrap_or("").to_string();
    counter.fetch_add(1, Ordering::SeqCst);
    let authority = target
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or(""))
        .unwrap_or(&target);
    let port = authority.rsplit(':').next().unwrap_or("80");
    let mut server = TcpStream::connect(format!("127.0.0.1:{port}"))?;
    if head.starts_with("CONNECT ") {
        client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    } else {
        server.write_all(head.as_bytes())?;
    }
    let buffered = reader.buffer().to_vec();
    server.write_all(&buffered)?;
    client.set_read_timeout(None)?;
    let (mut client_read, mut server_write) = (client.try_clone()?, server.try_clone()?);
    let upstream = thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let n = server.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        client.write_all(&buffer[..n])?;
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.join();
    Ok(())
}

#[test]
fn non_loopback_registries_go_through_the_proxy_and_loopback_does_not() {
    let fx = fixtures();
    let proxy = CountingProxy::start();
    let port = fx.registry.addr.rsplit(':').next().unwrap();
    let host = format!("den-test-registry:{port}");
    let reference = format!("{host}/{}:latest", fx.multi.repo);
    let proxy_url = format!("http://{}", proxy.addr);
    let project = project();

    // Plain http goes through HTTP_PROXY, not HTTPS_PROXY (dead here).
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let env = [
        ("HTTP_PROXY", proxy_url.as_str()),
        ("HTTPS_PROXY", dead_url.as_str()),
        ("DEN_INSECURE_REGISTRIES", host.as_str()),
    ];
    let stdout = harness::success(&pull(&project, &env, &[&reference]));
    assert!(
        stdout.contains(&format!("pulled {reference} sha256:")),
        "{stdout}"
    );
    assert!(has_layers(&project.data, &fx.multi));
    let through = proxy.requests.load(Ordering::SeqCst);
    assert!(through > 0, "nothing went through the proxy");

    // NO_PROXY sends it direct, where the name does not resolve.
    let env = [
        ("HTTP_PROXY", proxy_url.as_str()),
        ("NO_PROXY", "den-test-registry"),
        ("DEN_INSECURE_REGISTRIES", host.as_str()),
    ];
    refused_any_case(&pull(&project, &env, &[&reference]), &["den-test-registry"]);
    assert_eq!(proxy.requests.load(Ordering::SeqCst), through);

    // Loopback is always direct, even with a proxy that is not there.
    let env = [
        ("HTTP_PROXY", dead_url.as_str()),
        ("HTTPS_PROXY", dead_url.as_str()),
        ("ALL_PROXY", dead_url.as_str()),
    ];
    let direct = format!("{}/{}:latest", fx.registry.addr, fx.zstd.repo);
    harness::success(&pull(&project, &env, &["--quiet", &direct]));
    assert!(has_layers(&project.data, &fx.zstd));
}

#[test]
fn insecure_registries_come_from_the_settings_file_too() {
    let fx = fixtures();
    let proxy = CountingProxy::start();
    let port = fx.registry.addr.rsplit(':').next().unwrap();
    let host = format!("den-test-registry:{port}");
    let reference = format!("{host}/{}:latest", fx.multi.repo);
    let proxy_url = format!("http://{}", proxy.addr);
    let project = project();
    let settings = project.home.join("den-config.yaml");
    let settings_text = settings.to_str().unwrap();
    let env = [
        ("HTTP_PROXY", proxy_url.as_str()),
        ("DEN_CONFIG", settings_text),
    ];

    // Not listed: https, which the proxy's plain-http registry cannot speak.
    std::fs::write(&settings, "insecure-registries: []\n").unwrap();
    project.hand_over();
    assert!(!pull(&project, &env, &[&reference]).status.success());

    std::fs::write(&settings, format!("insecure-registries:\n  - {host}\n")).unwrap();
    project.hand_over();
    let stdout = harness::success(&pull(&project, &env, &[&reference]));
    assert!(
        stdout.contains(&format!("pulled {reference} sha256:")),
        "{stdout}"
    );

    // A mistake in the file is located like one in den.yaml.
    std::fs::write(&settings, "insecure-registry: [x]\n").unwrap();
    project.hand_over();
    refused_any_case(
        &pull(&project, &env, &[&reference]),
        &[
            &format!("{settings_text}:1:1: unknown setting `insecure-registry`"),
            "insecure-registries",
        ],
    );
}

// ---------------------------------------------------------------------------
// Disk full: the store on a 2 MiB tmpfs in a user+mount namespace of the
// test user (design §7).

#[test]
fn a_full_disk_fails_clearly_and_keeps_nothing() {
    let fx = fixtures();
    let project = project();
    let reference = format!("{}/{}:latest", fx.registry.addr, fx.big.repo);
    let script = format!(
        "set -u; D={data}; mount -t tmpfs -o size=2m tmpfs \"$D\" || exit 99; \
         DEN_DATA_DIR=\"$D\" {den} pull --quiet {reference}; echo \"rc=$?\"; \
         echo \"tmp=$(ls -A \"$D/tmp\" | tr '\\n' ' ')\"; \
         echo \"images=$(ls -A \"$D/images\" 2>/dev/null | tr '\\n' ' ')\"",
        data = project.data.display(),
        den = harness::den_binary().display(),
    );
    let mut command = in_user_namespace(&script);
    command
        .current_dir(&project.home)
        .env("HOME", &project.home);
    let output = bounded(command);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "namespace setup failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("rc={DEN_FAILED}")),
        "{stdout}\n{stderr}"
    );
    for needle in [
        "disk holding",
        "is full",
        &project.data.display().to_string(),
    ] {
        assert!(
            stderr.contains(needle),
            "stderr lacks `{needle}`:\n{stderr}"
        );
    }
    assert!(
        stdout.contains("tmp= \n") || stdout.contains("tmp=\n"),
        "{stdout}"
    );
    assert!(stdout.contains("images=\n"), "{stdout}");
}

// ---------------------------------------------------------------------------
// Progress: bars on a terminal (stderr), plain lines otherwise; an
// implicit pull by `den exec` reports on stderr only.

/// Runs `command` with the pty as stdin and stderr (and controlling
/// terminal), stdout piped; returns (status, stdout, terminal transcript).
fn on_terminal(mut command: Command) -> (std::process::ExitStatus, String, String) {
    let mut pty = harness::pty::Pty::open(40, 120);
    pty.attach(&mut command);
    command.env("TERM", "xterm");
    command.stdout(Stdio::piped());
    let mut child = command.spawn().expect("spawn den");
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + DEN_TIME_LIMIT;
    let status = loop {
        // Keep the terminal drained while den draws.
        pty.wait_for("\u{0}never\u{0}", Duration::from_millis(50));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("den hangs; terminal:\n{}", pty.transcript_text());
        }
    };
    pty.wait_for("\u{0}never\u{0}", Duration::from_millis(200));
    (status, reader.join().unwrap(), pty.transcript_text())
}

#[test]
fn pull_on_a_terminal_draws_bars_on_stderr() {
    let fx = fixtures();
    let project = project();
    let reference = format!("{}/{}:latest", fx.registry.addr, fx.big.repo);
    let command = project.den_in(Runner::User, &project.home, &["pull", &reference]);
    let (status, stdout, terminal) = on_terminal(command);
    assert!(status.success(), "{stdout}\n{terminal}");
    assert!(
        stdout.starts_with(&format!("pulled {reference} sha256:")) && stdout.lines().count() == 1,
        "stdout: {stdout}"
    );
    assert!(terminal.contains("total"), "no total bar:\n{terminal}");
    assert!(terminal.contains("done "), "{terminal}");
    assert!(terminal.contains("resolving "), "{terminal}");
    assert!(has_layers(&project.data, &fx.big));

    // Without a terminal: the plain lines on stdout, nothing on stderr.
    let project = self::project();
    let output = pull(&project, &[], &[&reference]);
    let stdout = harness::success(&output);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("resolving {reference}"), "{stdout}");
    assert!(lines.iter().any(|l| l.starts_with("fetching ")), "{stdout}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("done ") && l.ends_with("/s")),
        "{stdout}"
    );
    assert!(lines.last().unwrap().starts_with("pulled "), "{stdout}");
    assert_eq!(text(&output.stderr), "");
}

#[test]
fn implicit_pulls_report_on_stderr_and_leave_stdout_to_the_command() {
    let fx = fixtures();
    let reference = format!("{}/{}:latest", fx.registry.addr, fx.multi.repo);
    let den_yaml = format!("containers:\n  c:\n    from: \"{reference}\"\n");

    // No terminal: plain lines on stderr.
    let project = Project::new(&den_yaml);
    let output = bounded(project.den(Runner::User, &["exec", "c", "--", "echo", "hi"]));
    assert_eq!(harness::success(&output), "hi\n");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("resolving {reference}")),
        "{stderr}"
    );
    assert!(stderr.contains("fetching "), "{stderr}");
    assert!(
        stderr.contains(&format!("pulled {reference} sha256:")),
        "{stderr}"
    );

    // A terminal on stderr: bars there, and den still forks cleanly (a
    // debug build asserts it is single-threaded after the pull).
    let project = Project::new(&den_yaml);
    let command = project.den(Runner::User, &["exec", "c", "--", "echo", "hi"]);
    let (status, stdout, terminal) = on_terminal(command);
    assert!(status.success(), "{stdout}\n{terminal}");
    assert_eq!(stdout, "hi\n");
    assert!(terminal.contains("pulled "), "{terminal}");
}

/// The system's store counts (here a bundle with the test CA bind-mounted
/// over `/etc/ssl/certs/ca-certificates.crt` in a user+mount namespace of
/// the test user), and `SSL_CERT_FILE` replaces it.
#[test]
fn the_system_store_is_trusted_and_ssl_cert_file_replaces_it() {
    let fx = fixtures();
    let pki = pki();
    let tls = pki.registry(fx.storage());
    let project = project();
    let reference = format!("{}/{}:latest", tls.addr, fx.multi.repo);
    let system = "/etc/ssl/certs/ca-certificates.crt";
    let script = format!(
        "set -u; B={home}/bundle.crt; cat {system} {ca} > \"$B\" || exit 99; \
         mount --bind \"$B\" {system} || exit 98; \
         SSL_CERT_FILE={home}/none.crt DEN_DATA_DIR={data} {den} pull --quiet {reference}; \
         echo \"replaced=$?\"; \
         DEN_DATA_DIR={data} {den} pull --quiet {reference}; echo \"system=$?\"",
        home = project.home.display(),
        ca = pki.ca.display(),
        data = project.data.display(),
        den = harness::den_binary().display(),
    );
    // A bundle without the test CA, for SSL_CERT_FILE.
    fs::copy(system, project.home.join("none.crt")).unwrap();
    project.hand_over();
    let mut command = in_user_namespace(&script);
    command
        .current_dir(&project.home)
        .env("HOME", &project.home);
    let output = bounded(command);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "namespace setup failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("replaced={DEN_FAILED}")),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("not trusted"), "{stderr}");
    assert!(stdout.contains("system=0"), "{stdout}\n{stderr}");
    assert!(has_layers(&project.data, &fx.multi));
}

/// `sh -c script` as the test user in a new user+mount namespace.
fn in_user_namespace(script: &str) -> Command {
    let mut command = if harness::running_as_root() {
        let (uid, gid) = harness::test_ids();
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--", "unshare", "-Urm"]);
        command
    } else {
        let mut command = Command::new("unshare");
        command.arg("-Urm");
        command
    };
    command
        .args(["sh", "-c", script])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .stdin(Stdio::null());
    command
}
