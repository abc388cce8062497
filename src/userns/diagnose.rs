//! Turning "Operation not permitted" into the cause and the fix.
//!
//! Hosts block rootless containers in a few well-known ways; each is
//! visible in a sysctl or a file, so den checks them only after a failure.

use std::fs;
use std::io;

use anyhow::anyhow;

use super::failure::{Failure, Stage};

/// `clone` with namespace flags failed.
pub(super) fn namespaces_refused(err: io::Error) -> anyhow::Error {
    let cause = match err.raw_os_error() {
        Some(libc::EINVAL) => "den was not single-threaded when it created the container (a bug in den; please report it)".to_string(),
        _ => host_restriction().unwrap_or_else(|| "the host does not allow unprivileged user namespaces".to_string()),
    };
    anyhow!("cannot create the container's namespaces: {err}\n  cause: {cause}")
}

/// Init failed.
pub(super) fn setup_failed(failure: &Failure) -> anyhow::Error {
    // Only the kernel-facing steps can be blocked by host policy; a
    // denied chdir or open elsewhere is an ordinary permission problem.
    let denied = failure.stage.is_kernel_setup()
        && matches!(failure.errno, Some(libc::EPERM | libc::EACCES));
    let overlay = failure.stage == Stage::Overlay;
    let cause = match (denied, overlay) {
        (_, true) if !kernel_at_least(5, 11) => Some(format!(
            "unprivileged overlayfs needs Linux 5.11 or later; this kernel is {}",
            kernel_release()
        )),
        (true, _) => host_restriction(),
        _ => None,
    };
    match cause {
        Some(cause) => anyhow!("setting up the container failed: {failure}\n  cause: {cause}"),
        None => anyhow!("setting up the container failed: {failure}"),
    }
}

/// The first known restriction this host has, with its fix.
fn host_restriction() -> Option<String> {
    let sysctl = |name: &str| {
        fs::read_to_string(format!("/proc/sys/{name}"))
            .ok()
            .map(|v| v.trim().to_string())
    };
    if sysctl("user/max_user_namespaces").as_deref() == Some("0") {
        return Some(
            "user namespaces are disabled (user.max_user_namespaces = 0); \
             fix: `sudo sysctl -w user.max_user_namespaces=15000`"
                .into(),
        );
    }
    if sysctl("kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some(
            "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); \
             fix: `sudo sysctl -w kernel.unprivileged_userns_clone=1`"
                .into(),
        );
    }
    if sysctl("kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        return Some(
            "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10 and later); \
             fix: give den an AppArmor profile that allows `userns` (docs/runtime.md, \
             \"Host requirements\", has one) or `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`"
                .into(),
        );
    }
    if in_container() {
        return Some(
            "den seems to run inside a container whose seccomp or AppArmor profile blocks user namespaces and mounts \
             (Docker's default does); fix: run that container with \
             `--security-opt seccomp=unconfined --security-opt apparmor=unconfined`, or den on the host"
                .into(),
        );
    }
    None
}

fn in_container() -> bool {
    fs::metadata("/.dockerenv").is_ok()
        || fs::metadata("/run/.containerenv").is_ok()
        || fs::read_to_string("/proc/1/cgroup")
            .is_ok_and(|text| text.contains("docker") || text.contains("kubepods"))
}

fn kernel_release() -> String {
    rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned()
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = kernel_release();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}
