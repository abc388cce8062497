//! `den login` / `den logout` against real registries on 127.0.0.1
//! (Basic and token auth), as the test user: where credentials are saved,
//! that pulls use them, credential helpers, and the terminal prompts.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::harness::pty::Pty;
use crate::harness::registry::{self, Auth, Registry, fixtures};
use crate::harness::spawned::{TIMEOUT, output_within, wait_until};
use crate::harness::{self, DEN_FAILED, Project, Runner, success, text};
use rustix::termios::LocalModes;
use serde_json::{Value, json};

/// A project (only its home and store are used) and the XDG_RUNTIME_DIR
/// den gets, inside the project's home.
fn project() -> (Project, PathBuf) {
    let project = Project::new("containers: {}\n");
    let runtime = project.home.join("run");
    fs::create_dir(&runtime).unwrap();
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).unwrap();
    project.hand_over();
    (project, runtime)
}

/// `den <args>` as the test user in its home, with `XDG_RUNTIME_DIR`
/// (unless None) and `PATH` starting with `bin` (if given).
fn den(project: &Project, runtime: Option<&Path>, bin: Option<&Path>, args: &[&str]) -> Command {
    let mut command = project.den_in(Runner::User, &project.home, args);
    if let Some(runtime) = runtime {
        command.env("XDG_RUNTIME_DIR", runtime);
    }
    if let Some(bin) = bin {
        command.env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
        );
    }
    command
}

fn login(project: &Project, runtime: Option<&Path>, host: &str, password: &str) -> Output {
    let command = den(
        project,
        runtime,
        None,
        &[
            "login",
            "--username",
            registry::USER,
            "--password-stdin",
            host,
        ],
    );
    output_within(command, format!("{password}\n").as_bytes())
}

fn pull(project: &Project, runtime: Option<&Path>, reference: &str) -> Output {
    output_within(den(project, runtime, None, &["pull", "-q", reference]), b"")
}

/// Asserts den failed saying `needle` (any case); returns stderr.
#[track_caller]
fn refused(output: &Output, needle: &str) -> String {
    harness::refused_any_case(output, &[needle])
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn good_auth() -> String {
    registry::base64(format!("{}:{}", registry::USER, registry::PASSWORD).as_bytes())
}

#[test]
fn login_to_a_basic_registry_saves_auth_json_and_pull_uses_it() {
    let fx = fixtures();
    let basic = Registry::start(fx.storage(), Auth::Basic);
    let reference = format!("{}:latest", basic.reference("multi"));
    let (project, runtime) = project();
    let auth_json = runtime.join("containers/auth.json");

    // Without credentials the pull is refused.
    refused(
        &pull(&project, Some(&runtime), &reference),
        "needs credentials",
    );

    // Unrelated keys already in the file stay.
    let before = json!({
        "auths": { "other.example:5000": { "auth": "YTpi" } },
        "credHelpers": { "helped.example": "nothere" },
        "somethingElse": { "kept": true },
    });
    fs::create_dir_all(auth_json.parent().unwrap()).unwrap();
    fs::write(&auth_json, serde_json::to_vec(&before).unwrap()).unwrap();
    project.hand_over();

    let out = login(&project, Some(&runtime), &basic.addr, registry::PASSWORD);
    let stdout = success(&out);
    assert_eq!(stdout, format!("Login succeeded for {}\n", basic.addr));
    assert_eq!(mode(&auth_json), 0o600);
    let saved = read_json(&auth_json);
    assert_eq!(saved["auths"][basic.addr.as_str()]["auth"], good_auth());
    assert_eq!(
        saved["auths"]["other.example:5000"],
        before["auths"]["other.example:5000"]
    );
    assert_eq!(saved["credHelpers"], before["credHelpers"]);
    assert_eq!(saved["somethingElse"], before["somethingElse"]);
    // No temporary file is left next to it.
    assert_eq!(
        fs::read_dir(auth_json.parent().unwrap()).unwrap().count(),
        1
    );

    success(&pull(&project, Some(&runtime), &reference));

    // Logout removes the entry, keeps the rest; then pulls need credentials again.
    let out = output_within(
        den(&project, Some(&runtime), None, &["logout", &basic.addr]),
        b"",
    );
    assert_eq!(
        success(&out),
        format!(
            "Removed credentials for {} from {}\n",
            basic.addr,
            auth_json.display()
        )
    );
    let after = read_json(&auth_json);
    assert!(after["auths"].get(basic.addr.as_str()).is_none(), "{after}");
    assert_eq!(
        after["auths"]["other.example:5000"],
        before["auths"]["other.example:5000"]
    );
    assert_eq!(after["somethingElse"], before["somethingElse"]);
    assert_eq!(mode(&auth_json), 0o600);
    let store_reference = format!("{}:latest", basic.reference("zstd"));
    refused(
        &pull(&project, Some(&runtime), &store_reference),
        "needs credentials",
    );

    // Logging out again: nothing to remove, still a success.
    let out = output_within(
        den(&project, Some(&runtime), None, &["logout", &basic.addr]),
        b"",
    );
    assert_eq!(success(&out), format!("Not logged in to {}\n", basic.addr));
}

#[test]
fn a_wrong_password_is_refused_and_nothing_is_saved() {
    let fx = fixtures();
    let basic = Registry::start(fx.storage(), Auth::Basic);
    let (project, runtime) = project();
    let out = login(&project, Some(&runtime), &basic.addr, "wrong");
    let stderr = refused(&out, "rejected");
    assert_eq!(
        stderr,
        format!(
            "den: cannot log in to {0}: {0} rejected the username or password for {1}\n",
            basic.addr,
            registry::USER
        )
    );
    assert!(!runtime.join("containers").exists());
    assert!(!project.home.join(".docker").exists());

    let token = Registry::start(fx.storage(), Auth::Token { credentials: true });
    let out = login(&project, Some(&runtime), &token.addr, "wrong");
    let stderr = refused(&out, "token server");
    assert!(
        stderr.contains("rejected the username or password for tester"),
        "{stderr}"
    );
    assert!(!runtime.join("containers").exists());
}

#[test]
fn login_to_a_token_registry() {
    let fx = fixtures();
    let token = Registry::start(fx.storage(), Auth::Token { credentials: true });
    let (project, runtime) = project();
    success(&login(
        &project,
        Some(&runtime),
        &token.addr,
        registry::PASSWORD,
    ));
    let issuer = token.issuer.as_ref().unwrap();
    assert!(
        issuer
            .granted
            .lock()
            .unwrap()
            .iter()
            .any(|u| u == registry::USER),
        "the token server never saw the credentials"
    );
    let saved = read_json(&runtime.join("containers/auth.json"));
    assert_eq!(saved["auths"][token.addr.as_str()]["auth"], good_auth());
    let reference = format!("{}:latest", token.reference("multi"));
    success(&pull(&project, Some(&runtime), &reference));
}

#[test]
fn without_xdg_runtime_dir_docker_config_is_written() {
    let fx = fixtures();
    let basic = Registry::start(fx.storage(), Auth::Basic);
    let (project, _) = project();
    // Podman's file in the home, read before docker's, has other ones.
    let podman = project.home.join(".config/containers/auth.json");
    registry::write_auth_file(&podman, &basic.addr, "old", "stale");
    project.hand_over();
    let out = login(&project, None, &basic.addr, registry::PASSWORD);
    success(&out);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{} also has credentials for {}",
            podman.display(),
            basic.addr
        )),
        "{stderr}"
    );
    assert_eq!(
        read_json(&podman)["auths"][basic.addr.as_str()]["auth"],
        registry::base64(b"old:stale")
    );
    let config = project.home.join(".docker/config.json");
    assert_eq!(mode(&config), 0o600);
    assert_eq!(mode(&project.home.join(".docker")), 0o700);
    assert_eq!(
        read_json(&config)["auths"][basic.addr.as_str()]["auth"],
        good_auth()
    );
    // Logout removes the host from every file.
    let out = output_within(den(&project, None, None, &["logout", &basic.addr]), b"");
    assert_eq!(
        success(&out),
        format!(
            "Removed credentials for {0} from {1}\nRemoved credentials for {0} from {2}\n",
            basic.addr,
            podman.display(),
            config.display()
        )
    );
    assert_eq!(read_json(&config)["auths"], json!({}));
    assert_eq!(read_json(&podman)["auths"], json!({}));
    let reference = format!("{}:latest", basic.reference("multi"));
    refused(&pull(&project, None, &reference), "den login");
}

#[test]
fn a_credential_helper_gets_store_and_erase() {
    let fx = fixtures();
    let basic = Registry::start(fx.storage(), Auth::Basic);
    let (project, runtime) = project();
    let bin = project.home.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = project.home.join("helper.log");
    let helper = bin.join("docker-credential-dentest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n\
             input=$(cat)\n\
             printf '%s %s\\n' \"$1\" \"$input\" >> {log}\n\
             case \"$1\" in\n\
             store|erase) exit 0 ;;\n\
             *) echo 'credentials not found in native keychain'; exit 1 ;;\n\
             esac\n",
            log = log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    let config = project.home.join(".docker/config.json");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    let before = json!({ "credHelpers": { basic.addr.as_str(): "dentest" }, "psFormat": "x" });
    fs::write(&config, serde_json::to_vec(&before).unwrap()).unwrap();
    project.hand_over();

    let command = den(
        &project,
        Some(&runtime),
        Some(&bin),
        &[
            "login",
            "-u",
            registry::USER,
            "--password-stdin",
            &basic.addr,
        ],
    );
    success(&output_within(command, registry::PASSWORD.as_bytes()));
    let logged = fs::read_to_string(&log).unwrap();
    let (action, input) = logged.trim_end().split_once(' ').unwrap();
    assert_eq!(action, "store");
    let input: Value = serde_json::from_str(input).unwrap();
    assert_eq!(
        input,
        json!({"ServerURL": basic.addr, "Username": registry::USER, "Secret": registry::PASSWORD})
    );
    // Nothing went to the files.
    assert!(!runtime.join("containers/auth.json").exists());
    assert_eq!(read_json(&config), before);

    let command = den(
        &project,
        Some(&runtime),
        Some(&bin),
        &["logout", &basic.addr],
    );
    let stdout = success(&output_within(command, b""));
    assert_eq!(
        stdout,
        format!(
            "Removed credentials for {} from docker-credential-dentest\n",
            basic.addr
        )
    );
    let logged = fs::read_to_string(&log).unwrap();
    assert_eq!(
        logged.lines().last().unwrap(),
        format!("erase {}", basic.addr)
    );
}

#[test]
fn missing_inputs_without_a_terminal_are_clear_errors() {
    let (project, runtime) = project();
    let run = |args: &[&str]| output_within(den(&project, Some(&runtime), None, args), b"");
    refused(&run(&["login", "127.0.0.1:1"]), "--username");
    refused(
        &run(&["login", "--password-stdin", "127.0.0.1:1"]),
        "--password-stdin needs --username",
    );
    refused(
        &run(&["login", "-u", "tester", "127.0.0.1:1"]),
        "--password-stdin",
    );
    refused(
        &run(&["login", "-u", "tester", "ghcr.io/org"]),
        "names a repository",
    );
    assert!(!runtime.join("containers").exists());
}

#[test]
fn prompts_on_the_terminal_without_echo_and_restores_it() {
    let fx = fixtures();
    let basic = Registry::start(fx.storage(), Auth::Basic);
    let (project, runtime) = project();

    let mut pty = Pty::open(24, 80);
    let before = pty.mode();
    let mut command = den(&project, Some(&runtime), None, &["login", &basic.addr]);
    pty.attach(&mut command);
    let mut child = command.spawn().expect("spawn den");
    pty.expect("Username: ", TIMEOUT);
    pty.type_in(format!("{}\n", registry::USER).as_bytes());
    pty.expect("Password: ", TIMEOUT);
    // Wait until den has turned echo off, then type.
    let deadline = Instant::now() + TIMEOUT;
    while pty.mode().local_modes.contains(LocalModes::ECHO) {
        assert!(Instant::now() < deadline, "den never turned echo off");
        std::thread::sleep(Duration::from_millis(10));
    }
    pty.type_in(format!("{}\r", registry::PASSWORD).as_bytes());
    pty.expect(&format!("Login succeeded for {}", basic.addr), TIMEOUT);
    let status = wait_until(&mut child, Instant::now() + TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", pty.transcript_text());
    assert!(
        !pty.transcript_text().contains(registry::PASSWORD),
        "the password was echoed:\n{}",
        pty.transcript_text()
    );
    assert_eq!(pty.mode().local_modes, before.local_modes);
    let saved = read_json(&runtime.join("containers/auth.json"));
    assert_eq!(saved["auths"][basic.addr.as_str()]["auth"], good_auth());

    // Ctrl-C at the password prompt: cancelled, echo back on, nothing saved.
    let (project, runtime) = self::project();
    let mut pty = Pty::open(24, 80);
    let mut command = den(
        &project,
        Some(&runtime),
        None,
        &["login", "-u", registry::USER, &basic.addr],
    );
    pty.attach(&mut command);
    let mut child = command.spawn().expect("spawn den");
    pty.expect("Password: ", TIMEOUT);
    let deadline = Instant::now() + TIMEOUT;
    while pty.mode().local_modes.contains(LocalModes::ECHO) {
        assert!(Instant::now() < deadline, "den never turned echo off");
        std::thread::sleep(Duration::from_millis(10));
    }
    pty.type_in(b"half\x03");
    pty.expect("cancelled", TIMEOUT);
    let status = wait_until(&mut child, Instant::now() + TIMEOUT);
    assert_eq!(status.code(), Some(DEN_FAILED), "{}", pty.transcript_text());
    assert_eq!(pty.mode().local_modes, before.local_modes);
    assert!(!runtime.join("containers").exists());
}
