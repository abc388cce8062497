//! seccomp filters: the default profile every command and build step
//! runs under (`profile`), and the fake ownership of build steps
//! (`ownership`), both assembled as classic BPF by den (`bpf`).

mod bpf;
mod ownership;
mod profile;

use anyhow::{Context, Result};

use super::caps::Capabilities;
pub use bpf::Instruction;
pub(super) use ownership::FakeOwnership;
pub use ownership::OWNER_XATTR;

/// The default profile for a command holding `caps`, assembled once in
/// den before the container starts (a few microseconds); `None` where den
/// knows no syscall table (the command then runs unfiltered).
pub fn default_profile(caps: Capabilities) -> Result<Option<Vec<bpf::Instruction>>> {
    bpf::NATIVE_ARCH
        .map(|arch| profile::program(arch, caps))
        .transpose()
        .context("assembling the seccomp profile")
}

/// Installs a profile on the calling process, for it and whatever it
/// execs. The caller has set no_new_privs.
pub fn install(profile: &[bpf::Instruction]) -> Result<()> {
    crate::sys::seccomp::set_filter(profile, false)
        .map(drop)
        .context("installing the seccomp profile")
}
