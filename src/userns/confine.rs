//! The command's confinement, applied in its own process between init's
//! fork and the exec.
//!
//! Init set the container up as root of the container's user namespace,
//! with every capability there: enough to undo it (unmount a mask, mount
//! a fresh /proc, remount /sys read-write). So the command moves into a
//! user and mount namespace of its own, nested in init's: the kernel
//! copies init's mounts into it *locked*, and no capability the command
//! holds can unmount them or clear their read-only flags. It keeps
//! podman's capabilities, no more, under den's seccomp profile, with a
//! bounded number of processes.

use anyhow::{Context, Result};
use rustix::process::{Resource, Rlimit};
use rustix::thread::UnshareFlags;

use super::{Confinement, User, caps, seccomp};

/// Confines the calling process (the command, single-threaded, still
/// running den's code). `profile` is the seccomp program, if any.
pub(super) fn confine(
    confinement: &Confinement,
    user: User,
    profile: Option<&[seccomp::Instruction]>,
) -> Result<()> {
    // Init is not dumpable, and neither is its fork until it execs; the
    // kernel would refuse it its own id maps.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
        .context("making the command dumpable")?;
    // Before the nested namespace, whose own limit is copied from it.
    limit_processes(confinement.limits.pids)?;
    enter_nested_namespaces(user)?;
    caps::restrict_to(confinement.caps).context("dropping capabilities")?;
    rustix::thread::set_no_new_privs(true).context("setting no_new_privs")?;
    if let Some(profile) = profile {
        seccomp::install(profile)?;
    }
    Ok(())
}

/// RLIMIT_NPROC counts per user namespace (Linux 5.14+): set here, it
/// bounds the processes of the container, not of the host user. A hard
/// limit below it is kept.
fn limit_processes(pids: u64) -> Result<()> {
    let current = rustix::process::getrlimit(Resource::Nproc);
    let limit = current.maximum.map_or(pids, |hard| hard.min(pids));
    rustix::process::setrlimit(
        Resource::Nproc,
        Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .context("limiting the container's processes")
}

/// A new user namespace mapping the same single id, and a mount
/// namespace owned by it.
fn enter_nested_namespaces(user: User) -> Result<()> {
    // SAFETY: no FILES flag, and the process has one thread.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }
        .context("creating the command's nested namespaces")?;
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .with_context(|| format!("writing the command's /proc/self/{file}"))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{0} {0} 1", user.uid))?;
    write("gid_map", format!("{0} {0} 1", user.gid))
}
