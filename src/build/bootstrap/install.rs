//! Making the system's layer: the packages' files unpacked on the host
//! (both cores, straight into what becomes the layer), then the image's
//! own dpkg installs them all again in a container, running the
//! maintainer scripts as root under the fake-ownership filter, as a
//! build step does. The layer is then captured like a step's.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

use super::Target;
use super::resolve::Package;
use crate::build::{capture, output};
use crate::context::Context;
use crate::image::Store;
use crate::image::lock::TempEntry;
use crate::image::{fsx, parallel};
use crate::userns::{self, Action, Bind, BuildStep, Mode, Network, Spec};

/// Where the container sees the cached .debs.
const DEBS_MOUNT: &str = "/run/den/debs";
/// Keeps maintainer scripts from starting services in the new system.
const POLICY_RC_D: &str = "usr/sbin/policy-rc.d";
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Installs `packages` (their .debs at `debs`) into a new layer dir in the
/// store's tmp, ready to be moved to `layers/`.
pub fn make_layer(
    ctx: &Context,
    target: &Target,
    packages: &[&Package],
    debs: &[PathBuf],
    label: &str,
) -> Result<TempEntry> {
    let store = ctx.store()?;
    let layer = TempEntry::dir(&store.paths().tmp(), "bootstrap")?;
    let fs = layer.path().join("fs");
    std::fs::create_dir(&fs)?;
    std::fs::create_dir(layer.path().join("work"))?;
    std::fs::set_permissions(&fs, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let started = Instant::now();
    merge_usr(&fs, &target.arch)?;
    unpack_all(&fs, debs)?;
    write_file(&fs, POLICY_RC_D, "#!/bin/sh\nexit 101\n", 0o755)?;
    eprintln!(
        "den: {label}: unpacked {} packages in {:.1} s; configuring them with dpkg",
        packages.len(),
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    run_dpkg(store, layer.path(), debs, label, ctx.terminal)?;
    std::fs::remove_file(fs.join(POLICY_RC_D))?;
    configure_apt(&fs, target)?;
    clean(&fs)?;
    let den_made: Vec<PathBuf> = userns::MOUNT_POINTS.iter().map(PathBuf::from).collect();
    let captured = capture::capture(layer.path(), &den_made)?;
    eprintln!(
        "den: {label}: dpkg done in {:.1} s ({} entries, {})",
        started.elapsed().as_secs_f64(),
        captured.entries,
        crate::image::progress::human_size(captured.bytes),
    );
    Ok(layer)
}

/// `bin → usr/bin` and its kind, as Debian and Ubuntu have had since
/// 2023; packages still name the old paths, which then land in /usr.
fn merge_usr(fs: &Path, arch: &str) -> Result<()> {
    let extra: &[&str] = match arch {
        "amd64" => &["lib32", "lib64", "libx32"],
        "i386" => &["lib64", "libx32"],
        "ppc64el" | "loong64" => &["lib64"],
        "s390x" => &["lib32"],
        _ => &[],
    };
    for dir in ["bin", "sbin", "lib"].iter().chain(extra) {
        std::fs::create_dir_all(fs.join("usr").join(dir))?;
        std::os::unix::fs::symlink(format!("usr/{dir}"), fs.join(dir))?;
    }
    Ok(())
}

/// Unpacks every .deb, a few at a time: decompression is most of the work.
fn unpack_all(fs: &Path, debs: &[PathBuf]) -> Result<()> {
    let root = fsx::open_dir(fs)?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    parallel::try_map(debs, cores, |deb| super::deb::unpack(deb, root.as_fd()))?;
    Ok(())
}

/// dpkg installs every package (in the resolver's order; dpkg itself
/// orders configuration), then must report nothing left half-done.
fn run_dpkg(
    store: &Store,
    layer_dir: &Path,
    debs: &[PathBuf],
    label: &str,
    live: bool,
) -> Result<()> {
    let cache = debs
        .first()
        .and_then(|deb| deb.parent())
        .context("no packages to install")?;
    let mut argv: Vec<String> = [
        "/bin/sh",
        "-ec",
        "dpkg --install --force-depends --force-unsafe-io \"$@\"\n\
         dpkg --configure --pending --force-unsafe-io\n\
         audit=$(dpkg --audit)\n\
         if [ -n \"$audit\" ]; then echo \"$audit\"; exit 3; fi",
        "sh",
    ]
    .map(String::from)
    .to_vec();
    for deb in debs {
        let name = deb.file_name().context("a .deb without a name")?;
        argv.push(format!("{DEBS_MOUNT}/{}", name.to_string_lossy()));
    }
    let env = [
        format!("PATH={PATH}"),
        "DEBIAN_FRONTEND=noninteractive".to_string(),
        "DEBCONF_NONINTERACTIVE_SEEN=true".to_string(),
        "LC_ALL=C".to_string(),
    ]
    .to_vec();
    let spec = Spec {
        layers: Vec::new(),
        scratch: store.scratch_dir()?,
        cwd: "/".to_string(),
        argv,
        env,
        hostname: "bootstrap".to_string(),
        network: Network::None,
        binds: vec![Bind {
            source: cache.to_path_buf(),
            target: DEBS_MOUNT.into(),
            read_only: true,
        }],
        confinement: Default::default(),
        mode: Mode::BuildStep(BuildStep {
            layer_dir: layer_dir.to_path_buf(),
            run_files: Vec::new(),
            output: None,
            action: Action::Exec,
        }),
    };
    let (code, captured) = output::run_relayed(spec, live)?;
    if code != 0 {
        output::print_captured(&captured);
        bail!("{label}: dpkg failed with exit code {code}; nothing was recorded");
    }
    Ok(())
}

/// apt in the new system fetches from where it was made.
fn configure_apt(fs: &Path, target: &Target) -> Result<()> {
    let keyring = match target.distro {
        crate::config::Distro::Debian => "/usr/share/keyrings/debian-archive-keyring.gpg",
        crate::config::Distro::Ubuntu => "/usr/share/keyrings/ubuntu-archive-keyring.gpg",
    };
    let signed_by = match target.custom_keyring() {
        true => String::new(),
        false => format!("Signed-By: {keyring}\n"),
    };
    let sources = format!(
        "Types: deb\nURIs: {}\nSuites: {}\nComponents: {}\n{signed_by}",
        target.mirror,
        target.suite,
        target.components.join(" "),
    );
    let name = format!("etc/apt/sources.list.d/{}.sources", target.distro.name());
    write_file(fs, &name, &sources, 0o644)?;
    // Ubuntu's images ship a sources.list pointing elsewhere; ours rules.
    let _ = std::fs::remove_file(fs.join("etc/apt/sources.list"));
    Ok(())
}

/// Leaves out what only the making of the system produced.
fn clean(fs: &Path) -> Result<()> {
    for file in [
        "var/cache/ldconfig/aux-cache",
        "var/lib/dpkg/status-old",
        "var/lib/dpkg/diversions-old",
        "var/cache/debconf/config.dat-old",
        "var/cache/debconf/templates.dat-old",
    ] {
        crate::image::remove_file(&fs.join(file))?;
    }
    Ok(())
}

fn write_file(fs: &Path, rel: &str, content: &str, mode: u32) -> Result<()> {
    let path = fs.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(&path);
    std::fs::write(&path, content).with_context(|| format!("cannot write /{rel}"))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    Ok(())
}
