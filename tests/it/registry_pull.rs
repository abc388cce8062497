//! Pulling from real registries (CNCF distribution on 127.0.0.1, filled
//! with skopeo), through the real `den` binary as the test user: layer
//! formats, manifests, platforms, credentials and token auth, offline
//! runs after a pull, corrupt blobs and a killed pull. TLS, proxies, a
//! full disk and progress output are in `pull_environment`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::registry::{self, Auth, Fixtures, Pushed, Registry, fixtures};
use crate::harness::sorted_names as names;
use crate::harness::spawned::{TIMEOUT, eventually};
use crate::harness::{
    self, DEN_TIME_LIMIT, Project, Runner, bounded, oci, refused_any_case, success, text,
};

// ---------------------------------------------------------------------------
// Running den, always with a deadline.

/// `den <args>` as `runner` in the project root.
fn den(project: &Project, runner: Runner, args: &[&str]) -> Output {
    bounded(project.den(runner, args))
}

/// `den pull <args>` as `runner`, outside the project (in its home).
fn pull(project: &Project, runner: Runner, args: &[&str]) -> Output {
    let mut full = vec!["pull"];
    full.extend_from_slice(args);
    bounded(project.den_in(runner, &project.home, &full))
}

/// `den exec <container> -- sh -c <script>`.
fn sh(project: &Project, runner: Runner, container: &str, script: &str) -> Output {
    den(
        project,
        runner,
        &["exec", container, "--", "sh", "-c", script],
    )
}

/// A project with one container `c` from `reference`.
fn project_from(reference: &str) -> Project {
    Project::new(&format!("containers:\n  c:\n    from: \"{reference}\"\n"))
}

fn tag(registry: &Registry, image: &Pushed) -> String {
    format!("{}:latest", registry.reference(&image.repo))
}

// ---------------------------------------------------------------------------
// The store.

fn has_layer(data: &Path, diff_id: &str) -> bool {
    data.join("layers").join(diff_id).join("fs").is_dir()
}

fn image_records(data: &Path) -> Vec<String> {
    names(&data.join("images"))
        .into_iter()
        .filter(|n| n.ends_with(".json"))
        .collect()
}

#[track_caller]
fn assert_tmp_empty(data: &Path) {
    assert_eq!(names(&data.join("tmp")), Vec::<String>::new(), "store tmp/");
}

#[track_caller]
fn assert_has_image(data: &Path, image: &Pushed) {
    for diff_id in &image.diff_ids {
        assert!(
            has_layer(data, diff_id),
            "layer {diff_id} of {} missing; layers: {:?}",
            image.repo,
            names(&data.join("layers"))
        );
    }
    assert_tmp_empty(data);
}

/// What the container sees of `multi`'s whiteouts.
const WHITEOUT_SCRIPT: &str = "\
    if [ -e /etc/gone ]; then echo gone: present; else echo gone: deleted; fi; \
    echo kept: $(cat /etc/kept); \
    echo opq: $(ls -A /opq); \
    /bin/busybox true && echo busybox: runs";
const WHITEOUT_SEEN: &str = "gone: deleted\nkept: kept\nopq: new\nbusybox: runs\n";

// ---------------------------------------------------------------------------
// The fixtures themselves (no den): the registry serves what the tests
// expect, in the formats they mean.

#[test]
fn fixtures_are_served_in_the_formats_the_tests_name() {
    let fx = fixtures();
    let registry = &fx.registry;
    let (kind, _, manifest) = registry.manifest("multi", "latest");
    assert_eq!(kind, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 3);

    let (_, _, manifest) = registry.manifest("zstd", "latest");
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{manifest}"
        );
    }

    let (kind, _, _) = registry.manifest("v2s2", "latest");
    assert_eq!(kind, "application/vnd.docker.distribution.manifest.v2+json");

    let (kind, _, index) = registry.manifest("mx", "latest");
    assert_eq!(kind, "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                s = format!("{s}/{v}");
            }
            s
        })
        .collect();
    let mut sorted = platforms.clone();
    sorted.sort();
    assert_eq!(sorted, ["linux/amd64", "linux/arm64/v8"]);

    let (_, _, manifest) = registry.manifest("corrupt", "latest");
    let unique = manifest["layers"][1]["digest"].as_str().unwrap();
    assert!(registry.blob_file(unique).is_file());
}

#[test]
fn fixture_registries_authenticate_as_configured() {
    let fx = fixtures();
    let skopeo_inspect = |addr: &str, creds: Option<&str>| {
        let mut command = registry::skopeo();
        command.args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(creds) = creds {
            command.args(["--creds", creds]);
        } else {
            command.arg("--no-creds");
        }
        command.arg(format!("docker://{addr}/multi:latest"));
        harness::run_bounded(command, Duration::from_secs(60))
    };
    let good = format!("{}:{}", registry::USER, registry::PASSWORD);
    let bad = format!("{}:wrong", registry::USER);

    let basic = Registry::start(fx.storage(), Auth::Basic);
    assert!(skopeo_inspect(&basic.addr, Some(&good)).status.success());
    assert!(!skopeo_inspect(&basic.addr, Some(&bad)).status.success());
    assert!(!skopeo_inspect(&basic.addr, None).status.success());

    let token = Registry::start(fx.storage(), Auth::Token { credentials: true });
    let ok = skopeo_inspect(&token.addr, Some(&good));
    assert!(ok.status.success(), "{}\n{}", text(&ok.stderr), token.log());
    assert!(!skopeo_inspect(&token.addr, Some(&bad)).status.success());
    assert!(!skopeo_inspect(&token.addr, None).status.success());
    let issuer = token.issuer.as_ref().unwrap();
    assert!(!issuer.granted.lock().unwrap().is_empty());

    let anonymous = Registry::start(fx.storage(), Auth::Token { credentials: false });
    let ok = skopeo_inspect(&anonymous.addr, None);
    assert!(
        ok.status.success(),
        "{}\n{}",
        text(&ok.stderr),
        anonymous.log()
    );
}

// ---------------------------------------------------------------------------
// Pull and run.

fn pull_and_run(fx: &Fixtures, image: &Pushed, runner: Runner) {
    let reference = tag(&fx.registry, image);
    let project = project_from(&reference);
    success(&pull(&project, runner, &["--quiet", &reference]));
    let data = project.data_dir(runner);
    assert_has_image(&data, image);
    assert_eq!(
        success(&sh(&project, runner, "c", WHITEOUT_SCRIPT)),
        WHITEOUT_SEEN
    );
    assert_tmp_empty(&data);
}

#[test]
fn multi_layer_image_with_whiteouts_pulls_and_runs() {
    for runner in harness::runners() {
        pull_and_run(fixtures(), &fixtures().multi, runner);
    }
}

#[test]
fn zstd_layers_pull_and_run() {
    pull_and_run(fixtures(), &fixtures().zstd, Runner::User);
}

#[test]
fn docker_v2s2_manifest_pulls_and_runs() {
    pull_and_run(fixtures(), &fixtures().v2s2, Runner::User);
}

#[test]
fn from_a_registry_pulls_on_first_run_without_den_pull() {
    let fx = fixtures();
    let project = project_from(&tag(&fx.registry, &fx.multi));
    assert_eq!(
        success(&sh(&project, Runner::User, "c", WHITEOUT_SCRIPT)),
        WHITEOUT_SEEN
    );
    assert_has_image(&project.data, &fx.multi);
}

#[test]
fn multi_arch_index_runs_the_host_architecture() {
    let fx = fixtures();
    let project = project_from(&tag(&fx.registry, &fx.mx_host));
    let script = "cat /arch-marker; [ -e /other-arch-marker ] && echo other; true";
    let expected = format!("{}\n", registry::host_platform().0);
    assert_eq!(success(&sh(&project, Runner::User, "c", script)), expected);
    assert!(!has_layer(&project.data, &fx.mx_other.diff_ids[1]));
}

#[test]
fn platform_flag_pulls_the_arm64_manifest() {
    let fx = fixtures();
    let reference = tag(&fx.registry, &fx.mx_host);
    let project = project_from(&reference);
    let (arm64, amd64) = if registry::host_platform().0 == "arm64" {
        (&fx.mx_host, &fx.mx_other)
    } else {
        (&fx.mx_other, &fx.mx_host)
    };
    success(&pull(
        &project,
        Runner::User,
        &["--quiet", "--platform", "linux/arm64/v8", &reference],
    ));
    assert_has_image(&project.data, arm64);
    assert!(
        !has_layer(&project.data, &amd64.diff_ids[1]),
        "the amd64 image's layer was pulled too"
    );
    // The record is the arm64 manifest's.
    let (_, _, index) = fx.registry.manifest("mx", "latest");
    let arm64_manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "arm64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .strip_prefix("sha256:")
        .unwrap()
        .to_string();
    assert_eq!(
        image_records(&project.data),
        [format!("{arm64_manifest}.json")]
    );
}

#[test]
fn pull_by_digest_and_clear_errors_for_missing_tags_and_platforms() {
    let fx = fixtures();
    let (_, digest, _) = fx.registry.manifest("multi", "latest");
    let by_digest = format!("{}@{digest}", fx.registry.reference("multi"));
    let project = project_from(&by_digest);
    assert_eq!(
        success(&sh(&project, Runner::User, "c", WHITEOUT_SCRIPT)),
        WHITEOUT_SEEN
    );
    assert_eq!(
        image_records(&project.data),
        [format!("{}.json", digest.strip_prefix("sha256:").unwrap())]
    );

    let missing = format!("{}:no-such-tag", fx.registry.reference("multi"));
    refused_any_case(&pull(&project, Runner::User, &[&missing]), &["no-such-tag"]);

    let mx = tag(&fx.registry, &fx.mx_host);
    refused_any_case(
        &pull(&project, Runner::User, &["--platform", "linux/s390x", &mx]),
        &["linux/amd64", "linux/arm64/v8"],
    );
    assert_tmp_empty(&project.data);
}

#[test]
fn den_lock_pins_a_moved_tag_until_den_update() {
    let fx = fixtures();
    let work = registry::scratch_dir("den-test-moving-");
    let push_version = |version: &str| {
        let layout = work.path().join(version);
        let layers = [
            oci::busybox(),
            oci::Layer {
                tar: oci::TarBuilder::new()
                    .file("version", 0o644, format!("{version}\n").as_bytes())
                    .finish(),
                compression: oci::Compression::Gzip,
            },
        ];
        oci::write_layout(&layout, "latest", &layers, &["PATH=/bin"], &["sh"]);
        registry::push(
            &layout,
            "latest",
            &format!("{}:latest", fx.registry.reference("moving")),
            &[],
        );
    };
    push_version("one");
    let project = project_from(&format!("{}:latest", fx.registry.reference("moving")));
    let version = |project: &Project| success(&sh(project, Runner::User, "c", "cat /version"));
    assert_eq!(version(&project), "one\n");
    assert!(
        project.root.join("den.lock").is_file(),
        "no den.lock written"
    );

    push_version("two");
    assert_eq!(
        version(&project),
        "one\n",
        "the lock no longer pins the tag"
    );
    success(&den(&project, Runner::User, &["update"]));
    assert_eq!(version(&project), "two\n");
    assert_tmp_empty(&project.data);
}

// ---------------------------------------------------------------------------
// Credentials.

/// A project whose test user has `user:password` for `host` in
/// `~/.config/containers/auth.json`.
fn project_with_auth(reference: &str, host: &str, password: Option<&str>) -> Project {
    let project = project_from(reference);
    if let Some(password) = password {
        registry::write_auth_file(
            &project.home.join(".config/containers/auth.json"),
            host,
            registry::USER,
            password,
        );
        project.hand_over();
    }
    project
}

#[test]
fn basic_auth_registry_with_credentials_from_auth_json() {
    let fx = fixtures();
    let basic = Registry::start(fx.storage(), Auth::Basic);
    let reference = tag(&basic, &fx.multi);

    let project = project_with_auth(&reference, &basic.addr, Some(registry::PASSWORD));
    success(&pull(&project, Runner::User, &["--quiet", &reference]));
    assert_has_image(&project.data, &fx.multi);

    let wrong = project_with_auth(&reference, &basic.addr, Some("wrong"));
    refused_any_case(&pull(&wrong, Runner::User, &[&reference]), &["rejected"]);
    assert_eq!(image_records(&wrong.data), Vec::<String>::new());
    assert_tmp_empty(&wrong.data);

    let none = project_with_auth(&reference, &basic.addr, None);
    refused_any_case(
        &pull(&none, Runner::User, &[&reference]),
        &["needs credentials"],
    );
    assert_eq!(image_records(&none.data), Vec::<String>::new());
}

#[test]
fn credentials_from_docker_config_json() {
    let fx = fixtures();
    let basic = Registry::start(fx.storage(), Auth::Basic);
    let reference = tag(&basic, &fx.multi);
    let project = project_from(&reference);
    registry::write_auth_file(
        &project.home.join(".docker/config.json"),
        &basic.addr,
        registry::USER,
        registry::PASSWORD,
    );
    project.hand_over();
    success(&pull(&project, Runner::User, &["--quiet", &reference]));
    assert_has_image(&project.data, &fx.multi);
}

#[test]
fn credentials_from_registry_auth_file_and_a_credential_helper() {
    let fx = fixtures();
    let basic = Registry::start(fx.storage(), Auth::Basic);
    let reference = tag(&basic, &fx.multi);

    // $REGISTRY_AUTH_FILE, wherever it is.
    let project = project_from(&reference);
    let auth_file = project.home.join("elsewhere/auth.json");
    registry::write_auth_file(&auth_file, &basic.addr, registry::USER, registry::PASSWORD);
    project.hand_over();
    let mut command = project.den_in(
        Runner::User,
        &project.home,
        &["pull", "--quiet", &reference],
    );
    command.env("REGISTRY_AUTH_FILE", &auth_file);
    success(&bounded(command));
    assert_has_image(&project.data, &fx.multi);

    // credHelpers in the docker config: den runs docker-credential-<name>
    // get, with the registry's host on stdin.
    let project = project_from(&reference);
    let bin = project.home.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-dentest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\n\
             [ \"$1\" = get ] || exit 1\n\
             read -r server || true\n\
             if [ \"$server\" = \"{host}\" ]; then\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n\
             else echo 'credentials not found in native keychain'; exit 1; fi\n",
            host = basic.addr,
            user = registry::USER,
            password = registry::PASSWORD,
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    let config = serde_json::json!({ "credHelpers": { basic.addr.as_str(): "dentest" } });
    fs::create_dir_all(project.home.join(".docker")).unwrap();
    fs::write(
        project.home.join(".docker/config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    project.hand_over();
    let mut command = project.den_in(
        Runner::User,
        &project.home,
        &["pull", "--quiet", &reference],
    );
    command.env(
        "PATH",
        format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
    );
    success(&bounded(command));
    assert_has_image(&project.data, &fx.multi);
}

#[test]
fn token_registry_with_an_anonymous_token() {
    let fx = fixtures();
    let token = Registry::start(fx.storage(), Auth::Token { credentials: false });
    let reference = tag(&token, &fx.multi);
    let project = project_from(&reference);
    success(&pull(&project, Runner::User, &["--quiet", &reference]));
    assert_has_image(&project.data, &fx.multi);
}

#[test]
fn token_registry_with_credentials() {
    let fx = fixtures();
    let token = Registry::start(fx.storage(), Auth::Token { credentials: true });
    let reference = tag(&token, &fx.multi);
    let issuer = token.issuer.as_ref().unwrap();

    let project = project_with_auth(&reference, &token.addr, Some(registry::PASSWORD));
    success(&pull(&project, Runner::User, &["--quiet", &reference]));
    assert_has_image(&project.data, &fx.multi);
    assert!(
        issuer
            .granted
            .lock()
            .unwrap()
            .iter()
            .any(|u| u == registry::USER),
        "the token server never saw the credentials"
    );

    let wrong = project_with_auth(&reference, &token.addr, Some("wrong"));
    refused_any_case(&pull(&wrong, Runner::User, &[&reference]), &["rejected"]);
    assert_eq!(image_records(&wrong.data), Vec::<String>::new());
    assert_tmp_empty(&wrong.data);
}

// ---------------------------------------------------------------------------
// Offline, corruption, interruption.

#[test]
fn runs_offline_once_pulled() {
    let fx = fixtures();
    let mut own = Registry::start(fx.storage(), Auth::Anonymous);
    let project = project_from(&tag(&own, &fx.multi));
    assert_eq!(
        success(&sh(&project, Runner::User, "c", WHITEOUT_SCRIPT)),
        WHITEOUT_SEEN
    );
    own.stop();
    assert_eq!(
        success(&sh(&project, Runner::User, "c", WHITEOUT_SCRIPT)),
        WHITEOUT_SEEN
    );
}

#[test]
fn corrupt_blob_is_rejected_and_nothing_kept() {
    let fx = fixtures();
    let registry = &fx.registry;
    let (_, _, manifest) = registry.manifest("corrupt", "latest");
    let unique = manifest["layers"][1]["digest"].as_str().unwrap();
    let file = registry.blob_file(unique);
    let mut bytes = fs::read(&file).expect("read blob");
    let middle = bytes.len() / 2;
    for byte in &mut bytes[middle..middle + 64] {
        *byte ^= 0x5a;
    }
    fs::write(&file, &bytes).expect("corrupt blob");

    let reference = tag(registry, &fx.corrupt);
    let project = project_from(&reference);
    // The error names the layer (den may notice the gzip checksum or
    // the blob digest first).
    refused_any_case(&pull(&project, Runner::User, &[&reference]), &[unique]);
    assert!(!has_layer(&project.data, &fx.corrupt.diff_ids[1]));
    assert_eq!(image_records(&project.data), Vec::<String>::new());
    assert_tmp_empty(&project.data);
}

#[test]
fn blob_swapped_for_another_gzip_of_the_same_tar_is_rejected() {
    // The diff ID would still match: only the blob digest catches this.
    let fx = fixtures();
    let registry = &fx.registry;
    let (_, _, manifest) = registry.manifest("regzip", "latest");
    let layer = manifest["layers"][1]["digest"].as_str().unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut encoder, &fx.regzip_tar).unwrap();
    let other = encoder.finish().unwrap();
    let file = registry.blob_file(layer);
    assert_ne!(fs::read(&file).unwrap(), other, "same gzip bytes");
    fs::write(&file, &other).expect("swap blob");

    let reference = tag(registry, &fx.regzip);
    let project = project_from(&reference);
    refused_any_case(&pull(&project, Runner::User, &[&reference]), &[layer]);
    assert!(!has_layer(&project.data, &fx.regzip.diff_ids[1]));
    assert_eq!(image_records(&project.data), Vec::<String>::new());
    assert_tmp_empty(&project.data);
}

#[test]
fn tampered_manifest_is_rejected() {
    let fx = fixtures();
    let registry = &fx.registry;
    let (_, digest, manifest) = registry.manifest("tampered", "latest");
    // Same length, still JSON: one hex digit of the config digest changed.
    let file = registry.blob_file(&digest);
    let original = fs::read_to_string(&file).expect("read manifest blob");
    let config = manifest["config"]["digest"].as_str().unwrap();
    let last = config.chars().last().unwrap();
    let swapped = if last == '0' { '1' } else { '0' };
    let edited_config = format!("{}{swapped}", &config[..config.len() - 1]);
    fs::write(&file, original.replace(config, &edited_config)).expect("tamper");

    let reference = tag(registry, &fx.tampered);
    let project = project_from(&reference);
    refused_any_case(&pull(&project, Runner::User, &[&reference]), &[&digest]);
    assert_eq!(image_records(&project.data), Vec::<String>::new());
    assert_tmp_empty(&project.data);
}

#[test]
fn killed_pull_resumes_and_leaves_tmp_empty() {
    let fx = fixtures();
    let proxy = registry::StallProxy::start(&fx.registry.addr, 1 << 20);
    let reference = format!("{}/{}:latest", proxy.addr, fx.big.repo);
    let project = project_from(&reference);

    let mut command = project.den_in(
        Runner::User,
        &project.home,
        &["pull", "--quiet", &reference],
    );
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = command.spawn().expect("spawn den");
    let deadline = Instant::now() + DEN_TIME_LIMIT;
    while !proxy.has_stalled() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("den exited ({status}) before the proxy stalled");
        }
        assert!(Instant::now() < deadline, "the proxy never stalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The kill must leave den's partial layer behind for the rerun to clear.
    let partial = eventually(TIMEOUT, || !names(&project.data.join("tmp")).is_empty());
    assert!(partial, "den keeps no partial layer in tmp/ while fetching");
    assert_eq!(
        image_records(&project.data),
        Vec::<String>::new(),
        "the pull finished before den was killed"
    );
    child.kill().expect("kill -9 den");
    child.wait().unwrap();

    proxy.heal();
    success(&pull(&project, Runner::User, &["--quiet", &reference]));
    assert_has_image(&project.data, &fx.big);
    assert_eq!(image_records(&project.data).len(), 1);
}

#[test]
fn a_transfer_dropped_mid_blob_is_retried() {
    let fx = fixtures();
    let proxy = registry::StallProxy::drop_once(&fx.registry.addr, 2 << 20);
    let reference = format!("{}/{}:latest", proxy.addr, fx.big.repo);
    let project = project_from(&reference);
    success(&pull(&project, Runner::User, &["--quiet", &reference]));
    assert!(proxy.has_stalled(), "the proxy never dropped a connection");
    assert_has_image(&project.data, &fx.big);
    assert_eq!(image_records(&project.data).len(), 1);
}
