//! Capabilities of the command: podman's default set unless den.yaml
//! adds or drops some.

use std::io;

pub use rustix::thread::CapabilitySet as Capabilities;

/// Podman's rootless default: what package managers, `su` and servers on
/// low ports need, and none of the administrative powers (mounts,
/// namespaces, raw sockets, tracing).
pub const DEFAULT: Capabilities = Capabilities::CHOWN
    .union(Capabilities::DAC_OVERRIDE)
    .union(Capabilities::FOWNER)
    .union(Capabilities::FSETID)
    .union(Capabilities::KILL)
    .union(Capabilities::NET_BIND_SERVICE)
    .union(Capabilities::SETFCAP)
    .union(Capabilities::SETGID)
    .union(Capabilities::SETPCAP)
    .union(Capabilities::SETUID)
    .union(Capabilities::SYS_CHROOT);

/// A capability by name, as `capabilities(7)` spells it, with or without
/// `CAP_`, in any case; `ALL` is every capability.
pub fn by_name(name: &str) -> Option<Capabilities> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    match bare {
        "ALL" => Some(Capabilities::all()),
        _ => Capabilities::from_name(bare),
    }
}

/// Every capability's name, for messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    Capabilities::all().iter_names().map(|(name, _)| name)
}

/// Limits the calling process to `set`: the bounding set (what any later
/// exec can hold, root's included) and the permitted and effective sets;
/// nothing inheritable or ambient. Needs CAP_SETPCAP in the process's
/// user namespace.
pub fn restrict_to(set: Capabilities) -> io::Result<()> {
    // Up to the kernel's last capability, which may be newer than rustix's.
    for cap in 0..64 {
        if set.bits() & (1 << cap) != 0 {
            continue;
        }
        if !crate::sys::process::drop_bounding_capability(cap)? {
            break;
        }
    }
    rustix::thread::clear_ambient_capability_set()?;
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: set,
            permitted: set,
            inheritable: Capabilities::empty(),
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_podmans() {
        assert_eq!(DEFAULT.bits(), 0x8004_05fb);
    }

    #[test]
    fn names_are_read_as_capabilities_7_spells_them() {
        assert_eq!(by_name("SYS_PTRACE"), Some(Capabilities::SYS_PTRACE));
        assert_eq!(by_name("cap_net_raw"), Some(Capabilities::NET_RAW));
        assert_eq!(by_name("all"), Some(Capabilities::all()));
        assert_eq!(by_name("PTRACE"), None);
        assert!(names().any(|name| name == "CHECKPOINT_RESTORE"));
    }
}
