//! Turning "Operation not permitted" into the cause and the fix.
//!
//! Hosts block rootless containers in a few well-known ways; each is
//! visible in a sysctl or a file, so den checks them only after a failure.
//! What den reads of the host goes through `Host`, so the reasoning is
//! tested without such a host.

use std::fs;
use std::io;

use anyhow::anyhow;

use super::failure::{Failure, Stage};

/// `clone` with namespace flags failed.
pub(super) fn namespaces_refused(err: io::Error) -> anyhow::Error {
    let cause = match err.raw_os_error() {
        Some(libc::EINVAL) => "den was not single-threaded when it created the container (a bug in den; please report it)".to_string(),
        _ => host_restriction(&ThisHost).unwrap_or_else(|| "the host does not allow unprivileged user namespaces".to_string()),
    };
    anyhow!("cannot create the container's namespaces: {err}\n  cause: {cause}")
}

/// Init failed.
pub(super) fn setup_failed(failure: &Failure) -> anyhow::Error {
    match cause_of(failure, &ThisHost) {
        Some(cause) => anyhow!("setting up the container failed: {failure}\n  cause: {cause}"),
        None => anyhow!("setting up the container failed: {failure}"),
    }
}

/// What den reads of the host to explain a failure.
trait Host {
    /// A sysctl's value, by its /proc/sys path (`user/max_user_namespaces`).
    fn sysctl(&self, name: &str) -> Option<String>;
    fn in_container(&self) -> bool;
    fn kernel_release(&self) -> String;
}

struct ThisHost;

impl Host for ThisHost {
    fn sysctl(&self, name: &str) -> Option<String> {
        fs::read_to_string(format!("/proc/sys/{name}"))
            .ok()
            .map(|value| value.trim().to_string())
    }

    fn in_container(&self) -> bool {
        fs::metadata("/.dockerenv").is_ok()
            || fs::metadata("/run/.containerenv").is_ok()
            || fs::read_to_string("/proc/1/cgroup")
                .is_ok_and(|text| text.contains("docker") || text.contains("kubepods"))
    }

    fn kernel_release(&self) -> String {
        rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned()
    }
}

/// The cause of an init failure, when den knows it.
fn cause_of(failure: &Failure, host: &dyn Host) -> Option<String> {
    // Only the kernel-facing steps can be blocked by host policy; a
    // denied chdir or open elsewhere is an ordinary permission problem.
    let denied = failure.stage.is_kernel_setup()
        && matches!(failure.errno, Some(libc::EPERM | libc::EACCES));
    if failure.stage == Stage::Overlay && !kernel_at_least(&host.kernel_release(), 5, 11) {
        return Some(format!(
            "unprivileged overlayfs needs Linux 5.11 or later; this kernel is {}",
            host.kernel_release()
        ));
    }
    if denied {
        return host_restriction(host);
    }
    None
}

/// The first known restriction this host has, with its fix.
fn host_restriction(host: &dyn Host) -> Option<String> {
    if host.sysctl("user/max_user_namespaces").as_deref() == Some("0") {
        return Some(
            "user namespaces are disabled (user.max_user_namespaces = 0); \
             fix: `sudo sysctl -w user.max_user_namespaces=15000`"
                .into(),
        );
    }
    if host.sysctl("kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return Some(
            "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); \
             fix: `sudo sysctl -w kernel.unprivileged_userns_clone=1`"
                .into(),
        );
    }
    if host
        .sysctl("kernel/apparmor_restrict_unprivileged_userns")
        .as_deref()
        == Some("1")
    {
        return Some(
            "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10 and later); \
             fix: give den an AppArmor profile that allows `userns` (docs/runtime.md, \
             \"Host requirements\", has one) or `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`"
                .into(),
        );
    }
    if host.in_container() {
        return Some(
            "den seems to run inside a container whose seccomp or AppArmor profile blocks user namespaces and mounts \
             (Docker's default does); fix: run that container with \
             `--security-opt seccomp=unconfined --security-opt apparmor=unconfined`, or den on the host"
                .into(),
        );
    }
    None
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeHost {
        sysctls: Vec<(&'static str, &'static str)>,
        in_container: bool,
        kernel: &'static str,
    }

    impl Host for FakeHost {
        fn sysctl(&self, name: &str) -> Option<String> {
            self.sysctls
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        }
        fn in_container(&self) -> bool {
            self.in_container
        }
        fn kernel_release(&self) -> String {
            self.kernel.to_string()
        }
    }

    fn host(sysctls: Vec<(&'static str, &'static str)>) -> FakeHost {
        FakeHost {
            sysctls,
            in_container: false,
            kernel: "6.18.44",
        }
    }

    fn failure(stage: Stage, errno: i32) -> Failure {
        Failure {
            stage,
            errno: Some(errno),
            message: "mounting /proc: Operation not permitted".into(),
        }
    }

    #[test]
    fn a_refused_mount_is_blamed_on_the_hosts_restriction() {
        let apparmor = host(vec![("kernel/apparmor_restrict_unprivileged_userns", "1")]);
        let cause = cause_of(&failure(Stage::Mounts, libc::EPERM), &apparmor).unwrap();
        assert!(cause.contains("AppArmor"), "{cause}");
        let disabled = host(vec![("user/max_user_namespaces", "0")]);
        let cause = cause_of(&failure(Stage::IdMaps, libc::EACCES), &disabled).unwrap();
        assert!(cause.contains("max_user_namespaces"), "{cause}");
        let docker = FakeHost {
            in_container: true,
            ..host(Vec::new())
        };
        let cause = cause_of(&failure(Stage::PivotRoot, libc::EPERM), &docker).unwrap();
        assert!(
            cause.contains("--security-opt seccomp=unconfined"),
            "{cause}"
        );
    }

    #[test]
    fn other_failures_get_no_invented_cause() {
        let apparmor = host(vec![("kernel/apparmor_restrict_unprivileged_userns", "1")]);
        // Not a kernel setup step: an ordinary permission problem.
        assert_eq!(
            cause_of(&failure(Stage::Other, libc::EPERM), &apparmor),
            None
        );
        // A kernel step refused for another reason.
        assert_eq!(
            cause_of(&failure(Stage::Mounts, libc::EINVAL), &apparmor),
            None
        );
        // Refused, on a host with no known restriction.
        assert_eq!(
            cause_of(&failure(Stage::Mounts, libc::EPERM), &host(Vec::new())),
            None
        );
    }

    #[test]
    fn an_old_kernel_explains_a_failed_overlay() {
        let old = FakeHost {
            kernel: "5.4.0-150-generic",
            ..host(Vec::new())
        };
        let cause = cause_of(&failure(Stage::Overlay, libc::EINVAL), &old).unwrap();
        assert!(cause.contains("5.11") && cause.contains("5.4.0"), "{cause}");
        assert!(kernel_at_least("6.18.44-fc", 5, 11));
        assert!(!kernel_at_least("5.10.0", 5, 11));
    }
}
