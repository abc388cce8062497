//! The container's root filesystem, built inside its mount namespace.
//!
//! Host parts (a fresh /proc and /sys, the project, device nodes) are
//! taken as detached mounts *before* `pivot_root`, while host paths still
//! resolve, and attached *after* it, so every target path resolves inside
//! the container: a symlink in the image can never redirect a mount or a
//! write onto the host.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::CWD;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags, UnmountFlags, fsconfig_create, fsmount, fsopen, mount, mount_bind, mount_change,
    mount_remount, move_mount, open_tree, unmount,
};

use super::failure::{AtStage, Failure, Stage};
use super::{Network, Spec};
use crate::sys::mount::make_tree_read_only;

/// Device nodes bound from the host: the set every program expects.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// /proc files that leak host details, hidden behind /dev/null (as
/// Podman and Docker do).
const MASKED_PROC_FILES: [&str; 6] = [
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
];
const MASKED_PROC_DIRS: [&str; 2] = ["acpi", "scsi"];
const READ_ONLY_PROC: [&str; 6] = ["asound", "bus", "fs", "irq", "sys", "sysrq-trigger"];
const MASKED_SYS_DIRS: [&str; 3] = ["firmware", "devices/virtual/powercap", "dev/block"];

/// Where den's own files go inside the container (a tmpfs): the CA
/// bundle, package manager settings, bound caches.
pub const RUN_DEN: &str = "/run/den";

/// Paths a build step's container may create in its upper layer only
/// as mount points or stubs; capture removes them when they are empty.
pub const MOUNT_POINTS: [&str; 9] = [
    "proc",
    "sys",
    "dev",
    "tmp",
    "run/den",
    "run",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
];

/// Parts of the host taken before `pivot_root`.
struct HostParts {
    proc: OwnedFd,
    sys: OwnedFd,
    work: Option<OwnedFd>,
    binds: Vec<(String, OwnedFd)>,
    devices: Vec<(&'static str, OwnedFd)>,
    resolv_conf: Vec<u8>,
    hosts: Vec<u8>,
}

/// Builds the root filesystem and makes it the process's root.
pub(super) fn build(spec: &Spec) -> Result<(), Failure> {
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .context("making the mount tree private")
    .at(Stage::Mounts)?;
    let host = take_host_parts(spec).at(Stage::Mounts)?;
    let new_root = mount_overlay(spec).at(Stage::Overlay)?;
    enter(&new_root).at(Stage::PivotRoot)?;
    populate(spec, host).at(Stage::Mounts)
}

fn take_host_parts(spec: &Spec) -> Result<HostParts> {
    let flags = MountAttrFlags::MOUNT_ATTR_NOSUID
        | MountAttrFlags::MOUNT_ATTR_NODEV
        | MountAttrFlags::MOUNT_ATTR_NOEXEC;
    // A fresh procfs must be created while a full host /proc is still
    // visible: the kernel refuses one that would reveal more than that.
    let proc = fresh_mount("proc", flags).context("mounting /proc for the new pid namespace")?;
    let sys = match &spec.network {
        // sysfs shows network devices, so a fresh one needs its own netns.
        Network::None | Network::Slirp { .. } => {
            fresh_mount("sysfs", flags | MountAttrFlags::MOUNT_ATTR_RDONLY)
        }
        Network::Host => {
            take_tree("/sys").and_then(|tree| make_tree_read_only(&tree).map(|()| tree))
        }
    }
    .context("mounting /sys")?;
    let work = match spec.work() {
        Some(dir) => Some(
            take_tree(dir)
                .with_context(|| format!("binding the project directory {}", dir.display()))?,
        ),
        None => None,
    };
    let binds = spec
        .binds
        .iter()
        .map(|bind| {
            let tree = take_tree(&bind.source)
                .with_context(|| format!("binding {}", bind.source.display()))?;
            if bind.read_only {
                make_tree_read_only(&tree)
                    .with_context(|| format!("binding {} read-only", bind.source.display()))?;
            }
            Ok((bind.target.clone(), tree))
        })
        .collect::<Result<_>>()?;
    let devices = DEVICES
        .iter()
        .map(|name| {
            Ok((
                *name,
                take_node(&format!("/dev/{name}"))
                    .with_context(|| format!("binding /dev/{name}"))?,
            ))
        })
        .collect::<Result<_>>()?;
    Ok(HostParts {
        proc,
        sys,
        work,
        binds,
        devices,
        resolv_conf: fs::read("/etc/resolv.conf").unwrap_or_default(),
        hosts: fs::read("/etc/hosts").unwrap_or_default(),
    })
}

fn fresh_mount(fstype: &str, attrs: MountAttrFlags) -> io::Result<OwnedFd> {
    let context = fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    fsconfig_create(&context)?;
    Ok(fsmount(&context, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?)
}

/// A detached recursive copy of a host mount tree.
fn take_tree(path: impl AsRef<Path>) -> io::Result<OwnedFd> {
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_RECURSIVE;
    Ok(open_tree(CWD, path.as_ref(), flags)?)
}

fn take_node(path: &str) -> io::Result<OwnedFd> {
    Ok(open_tree(
        CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )?)
}

/// Mounts a private tmpfs over the scratch directory and the overlay of
/// the image's layers on it; returns the overlay's mount point. Memory is
/// faster than disk here by about a millisecond a run (no journal on
/// creation, no sync at unmount, nothing to delete after), so the
/// writable layer is a tmpfs bounded by `limits.root`.
fn mount_overlay(spec: &Spec) -> Result<PathBuf> {
    let scratch = &spec.scratch;
    let options = format!(
        "mode=0755,size={}",
        spec.confinement.limits.root.tmpfs_option()
    );
    let options = CString::new(options).context("a NUL byte in tmpfs options")?;
    mount(
        "tmpfs",
        scratch,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        options.as_c_str(),
    )
    .with_context(|| format!("mounting a tmpfs on {}", scratch.display()))?;
    for dir in ["upper", "work", "root", "empty"] {
        fs::create_dir(scratch.join(dir))
            .with_context(|| format!("creating {dir} in the scratch tmpfs"))?;
    }
    // A build step's upper is its future layer, on the store's disk.
    let (upper, work) = match spec.build_step() {
        Some(step) => (step.layer_dir.join("fs"), step.layer_dir.join("work")),
        None => (scratch.join("upper"), scratch.join("work")),
    };
    // Named before `lower_dirs` may change into the store's directory.
    let (upper, work) = (option_path(&upper)?, option_path(&work)?);
    let lower = lower_dirs(spec, &scratch.join("empty"))?;
    let options = format!("lowerdir={lower},upperdir={upper},workdir={work},userxattr");
    let root = scratch.join("root");
    let options = CString::new(options).context("layer paths contain a NUL byte")?;
    mount(
        "overlay",
        &root,
        "overlay",
        MountFlags::empty(),
        options.as_c_str(),
    )
    .context("mounting the overlay root filesystem")?;
    Ok(root)
}

/// The overlay `lowerdir` value: top layer first. The mount options must
/// fit in one page, so when the layers share a directory (the store's),
/// den changes into it and names them relatively.
fn lower_dirs(spec: &Spec, empty: &Path) -> Result<String> {
    if spec.layers.is_empty() {
        return option_path(empty);
    }
    let parent = common_parent(&spec.layers);
    if let Some(parent) = &parent {
        std::env::set_current_dir(parent)
            .with_context(|| format!("entering {}", parent.display()))?;
    }
    let names = spec.layers.iter().rev().map(|layer| match &parent {
        Some(parent) => option_path(layer.strip_prefix(parent).unwrap_or(layer)),
        None => option_path(layer),
    });
    let lower = names.collect::<Result<Vec<_>>>()?.join(":");
    if lower.len() > 3500 {
        bail!(
            "the image has too many layers ({}) for one overlay mount",
            spec.layers.len()
        );
    }
    Ok(lower)
}

fn common_parent(layers: &[PathBuf]) -> Option<PathBuf> {
    let first = layers.first()?.parent()?.parent()?;
    layers
        .iter()
        .all(|layer| layer.starts_with(first))
        .then(|| first.to_path_buf())
}

/// A path as an overlay option value; the separators cannot be escaped
/// portably, so paths holding them are refused with a clear message.
fn option_path(path: &Path) -> Result<String> {
    let text = path
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    if text.contains([',', ':', '\\']) {
        bail!(
            "{text}: overlayfs cannot use a path containing `,`, `:` or `\\`; set DEN_DATA_DIR to another place"
        );
    }
    Ok(text.to_string())
}

/// pivot_root into `new_root` and let go of the host's tree.
fn enter(new_root: &Path) -> Result<()> {
    std::env::set_current_dir(new_root).context("entering the new root")?;
    rustix::process::pivot_root(".", ".").context("pivot_root into the container")?;
    unmount(".", UnmountFlags::DETACH).context("detaching the host's root")?;
    std::env::set_current_dir("/").context("entering /")?;
    Ok(())
}

fn populate(spec: &Spec, host: HostParts) -> Result<()> {
    mount_dev(host.devices, spec.confinement.limits.shm)?;
    attach(host.proc, "/proc")?;
    let mut masks = Masks::default();
    restrict_proc(&mut masks)?;
    attach(host.sys, "/sys")?;
    for dir in MASKED_SYS_DIRS {
        masks.hide_dir(&Path::new("/sys").join(dir))?;
    }
    let limits = &spec.confinement.limits;
    mount_tmpfs(
        "/tmp",
        &format!("mode=1777,size={}", limits.tmp.tmpfs_option()),
        MountFlags::NOSUID | MountFlags::NODEV,
    )?;
    if let Some(work) = host.work {
        attach(work, "/work")?;
    }
    mount_tmpfs(
        RUN_DEN,
        &format!("mode=0755,size={}", limits.run_den.tmpfs_option()),
        MountFlags::NOSUID | MountFlags::NODEV,
    )?;
    let run_files = spec.build_step().map(|step| &step.run_files[..]);
    for (name, contents) in run_files.unwrap_or_default() {
        let path = format!("{RUN_DEN}/{name}");
        fs::write(&path, contents).with_context(|| format!("writing {path}"))?;
    }
    for (target, tree) in host.binds {
        attach_bind(tree, &target)?;
    }
    let etc = etc_files(spec, &host.resolv_conf, &host.hosts);
    match spec.build_step() {
        None => etc
            .iter()
            .try_for_each(|(path, contents)| replace_file(path, contents)),
        Some(_) => etc
            .iter()
            .try_for_each(|(path, contents)| bind_file(path, contents)),
    }
}

/// Attaches a bound host tree at `target`, making a mount point of the
/// same kind (file or directory) first.
fn attach_bind(tree: OwnedFd, target: &str) -> Result<()> {
    let is_dir = rustix::fs::fstat(&tree)
        .map(|stat| rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir())
        .with_context(|| format!("inspecting what to mount at {target}"))?;
    if is_dir {
        return attach(tree, target);
    }
    if let Some(parent) = Path::new(target).parent() {
        ensure_dir(&parent.to_string_lossy())?;
    }
    fs::File::create(target).with_context(|| format!("creating {target}"))?;
    move_into_place(tree, target)
}

/// Attaches a detached mount at `target`, creating the mount point.
fn attach(tree: OwnedFd, target: &str) -> Result<()> {
    ensure_dir(target)?;
    move_into_place(tree, target)
}

fn move_into_place(tree: OwnedFd, target: &str) -> Result<()> {
    move_mount(
        &tree,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .with_context(|| format!("mounting {target}"))
}

fn ensure_dir(path: &str) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .with_context(|| format!("creating {path}"))
}

fn mount_tmpfs(target: &str, options: &str, flags: MountFlags) -> Result<()> {
    ensure_dir(target)?;
    let options = CString::new(options).context("a NUL byte in tmpfs options")?;
    mount("tmpfs", target, "tmpfs", flags, options.as_c_str())
        .with_context(|| format!("mounting a tmpfs on {target}"))
}

/// A minimal /dev: host device nodes bound onto empty files, a private
/// devpts instance, shm, and the usual symlinks.
fn mount_dev(devices: Vec<(&'static str, OwnedFd)>, shm: super::Size) -> Result<()> {
    mount_tmpfs(
        "/dev",
        "mode=0755,size=1m",
        MountFlags::NOSUID | MountFlags::NOEXEC,
    )?;
    for (name, node) in devices {
        let path = format!("/dev/{name}");
        fs::File::create(&path).with_context(|| format!("creating {path}"))?;
        move_mount(
            &node,
            "",
            CWD,
            path.as_str(),
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .with_context(|| format!("mounting {path}"))?;
    }
    ensure_dir("/dev/pts")?;
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        c"newinstance,ptmxmode=0666,mode=0620",
    )
    .context("mounting /dev/pts")?;
    mount_tmpfs(
        "/dev/shm",
        &format!("mode=1777,size={}", shm.tmpfs_option()),
        MountFlags::NOSUID | MountFlags::NODEV,
    )?;
    let links = [
        ("pts/ptmx", "/dev/ptmx"),
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ];
    for (target, link) in links {
        std::os::unix::fs::symlink(target, link).with_context(|| format!("creating {link}"))?;
    }
    Ok(())
}

fn restrict_proc(masks: &mut Masks) -> Result<()> {
    for file in MASKED_PROC_FILES {
        let path = format!("/proc/{file}");
        if Path::new(&path).is_file() {
            mount_bind("/dev/null", path.as_str()).with_context(|| format!("masking {path}"))?;
        }
    }
    for dir in MASKED_PROC_DIRS {
        masks.hide_dir(&Path::new("/proc").join(dir))?;
    }
    for entry in READ_ONLY_PROC {
        let path = format!("/proc/{entry}");
        if Path::new(&path).exists() {
            mount_bind(path.as_str(), path.as_str()).with_context(|| format!("binding {path}"))?;
            // The flags /proc was mounted with are locked and must be kept.
            let flags = MountFlags::BIND
                | MountFlags::RDONLY
                | MountFlags::NOSUID
                | MountFlags::NODEV
                | MountFlags::NOEXEC;
            mount_remount(path.as_str(), flags, "")
                .with_context(|| format!("making {path} read-only"))?;
        }
    }
    Ok(())
}

/// Hides directories behind one empty read-only tmpfs: mounted on the
/// first, bound on the others (a bind is cheaper than a new superblock,
/// at mount time and again when the container ends).
#[derive(Default)]
struct Masks {
    first: Option<PathBuf>,
}

impl Masks {
    /// Hides `path`, if it exists.
    fn hide_dir(&mut self, path: &Path) -> Result<()> {
        if !path.is_dir() {
            return Ok(());
        }
        let mounted = match &self.first {
            Some(first) => mount_bind(first, path),
            None => mount(
                "tmpfs",
                path,
                "tmpfs",
                MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV,
                c"size=0",
            ),
        };
        mounted.with_context(|| format!("masking {}", path.display()))?;
        self.first.get_or_insert_with(|| path.to_path_buf());
        Ok(())
    }
}

/// /etc/resolv.conf, /etc/hosts and /etc/hostname for this container:
/// (path, contents).
fn etc_files(spec: &Spec, resolv_conf: &[u8], host_hosts: &[u8]) -> [(&'static str, Vec<u8>); 3] {
    let mut hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
        spec.hostname
    )
    .into_bytes();
    let resolv_conf = match &spec.network {
        Network::Host => {
            hosts.extend_from_slice(host_hosts);
            resolv_conf.to_vec()
        }
        Network::Slirp { host_loopback, .. } => {
            if *host_loopback {
                let line = format!("{}\t{}\n", crate::net::GATEWAY_ADDR, crate::net::HOST_NAME);
                hosts.extend_from_slice(line.as_bytes());
            }
            format!("nameserver {}\n", crate::net::DNS_ADDR).into_bytes()
        }
        Network::None => Vec::new(),
    };
    [
        ("/etc/hosts", hosts),
        ("/etc/resolv.conf", resolv_conf),
        ("/etc/hostname", format!("{}\n", spec.hostname).into_bytes()),
    ]
}

/// For a run: the file lands in the ephemeral upper layer; any symlink
/// the image had there is replaced, never followed.
fn replace_file(path: &str, contents: &[u8]) -> Result<()> {
    ensure_dir("/etc")?;
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            return Err(err).with_context(|| format!("replacing {path}"));
        }
        _ => {}
    }
    fs::write(path, contents).with_context(|| format!("writing {path}"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("writing {path}"))
}

/// For a build step: the file is written to /run/den and bound over the
/// image's, so the layer keeps the image's own. An image without one
/// gets an empty stub (removed at capture); a symlink there is left
/// alone rather than followed.
fn bind_file(path: &str, contents: &[u8]) -> Result<()> {
    let name = Path::new(path).file_name().expect("an /etc file name");
    let source = Path::new(RUN_DEN).join(name);
    fs::write(&source, contents).with_context(|| format!("writing {}", source.display()))?;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            ensure_dir("/etc")?;
            fs::File::create(path).with_context(|| format!("creating {path}"))?;
        }
        Err(err) => return Err(err).with_context(|| format!("inspecting {path}")),
    }
    mount_bind(&source, path).with_context(|| format!("mounting {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userns::{Command, Confinement, Mode, User};

    fn spec(network: Network) -> Spec {
        Spec {
            layers: vec![
                PathBuf::from("/s/layers/aa/fs"),
                PathBuf::from("/s/layers/bb/fs"),
            ],
            scratch: PathBuf::from("/s/scratch"),
            cwd: "/work".into(),
            argv: vec!["true".into()],
            env: Vec::new(),
            hostname: "dev".into(),
            network,
            binds: Vec::new(),
            confinement: Confinement::default(),
            mode: Mode::Command(Command {
                work: PathBuf::from("/p"),
                user: User::ROOT,
                tty: false,
                preserved_fds: 0,
            }),
        }
    }

    fn etc(network: Network) -> (String, String) {
        let [(_, hosts), (_, resolv), (_, hostname)] = etc_files(
            &spec(network),
            b"nameserver 192.0.2.1\n",
            b"192.0.2.7\tbuild\n",
        );
        assert_eq!(hostname, b"dev\n");
        (
            String::from_utf8(hosts).unwrap(),
            String::from_utf8(resolv).unwrap(),
        )
    }

    #[test]
    fn etc_files_follow_the_network() {
        let (hosts, resolv) = etc(Network::Host);
        assert!(hosts.contains("127.0.1.1\tdev\n") && hosts.ends_with("192.0.2.7\tbuild\n"));
        assert_eq!(resolv, "nameserver 192.0.2.1\n");

        let slirp = |host_loopback| Network::Slirp {
            ports: Vec::new(),
            host_loopback,
        };
        let (hosts, resolv) = etc(slirp(false));
        assert!(!hosts.contains("host.den.internal"), "{hosts}");
        assert_eq!(resolv, "nameserver 10.0.2.3\n");
        let (hosts, _) = etc(slirp(true));
        assert!(hosts.contains("10.0.2.2\thost.den.internal\n"), "{hosts}");

        let (hosts, resolv) = etc(Network::None);
        assert!(!hosts.contains("192.0.2.7"));
        assert_eq!(resolv, "");
    }

    #[test]
    fn layers_share_the_stores_directory_and_odd_paths_are_refused() {
        let layers = spec(Network::None).layers;
        assert_eq!(common_parent(&layers), Some(PathBuf::from("/s/layers")));
        let mixed = [layers[0].clone(), PathBuf::from("/elsewhere/x/fs")];
        assert_eq!(common_parent(&mixed), None);
        assert!(option_path(Path::new("/a,b")).is_err());
        assert!(option_path(Path::new("/a:b")).is_err());
        assert_eq!(option_path(Path::new("/a/b")).unwrap(), "/a/b");
    }
}
