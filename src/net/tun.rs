//! Creating the container's TUN device, in the *current* network namespace.
//!
//! The netns a TUN belongs to is the netns of the process that opened
//! `/dev/net/tun`, so the container's init calls [`create_tun`] inside the
//! new namespaces and passes the fd to den over SCM_RIGHTS. Configuration
//! (through `crate::sys::netif`): `lo` up, `tap0` 10.0.2.100/24 with MTU
//! 65520, up, default route via 10.0.2.2.

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use super::{CONTAINER_ADDR, GATEWAY_ADDR, MTU, PREFIX_LEN};
use crate::sys::netif::{self, Interfaces};

/// The name of the container's interface.
pub const TUN_NAME: &CStr = c"tap0";

/// Why the TUN device could not be made; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error(
        "network: slirp needs /dev/net/tun, which this user cannot open (permission denied). \
         Fix: `sudo chmod 0666 /dev/net/tun` (the default on most distributions; the udev rule \
         KERNEL==\"tun\", MODE=\"0666\" keeps it), or use `network: host`"
    )]
    NoAccess,
    #[error(
        "network: slirp needs /dev/net/tun, which does not exist here. Fix: `sudo modprobe tun`, \
         or use `network: host`"
    )]
    Missing,
    #[error(
        "network: slirp could not create its TUN device (TUNSETIFF: operation not permitted; \
         a seccomp filter or a container around den may forbid it). Use `network: host`"
    )]
    SetIffDenied,
    #[error("network: slirp could not {step}: {source}")]
    Other {
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Opens `/dev/net/tun`, creates `tap0` in the current network namespace,
/// configures it (and brings `lo` up), and returns the device's fd.
pub fn create_tun() -> Result<OwnedFd, TunError> {
    let tun = open_tun_device()?;
    attach_interface(&tun)?;
    configure_interfaces().map_err(|(step, source)| TunError::Other { step, source })?;
    Ok(tun)
}

fn open_tun_device() -> Result<OwnedFd, TunError> {
    netif::open_tun().map_err(|error| match error.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => TunError::NoAccess,
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => TunError::Missing,
        _ => TunError::Other {
            step: "open /dev/net/tun",
            source: error,
        },
    })
}

fn attach_interface(tun: &OwnedFd) -> Result<(), TunError> {
    netif::attach_tun(tun, TUN_NAME).map_err(|error| match error.raw_os_error() {
        Some(libc::EPERM) => TunError::SetIffDenied,
        _ => TunError::Other {
            step: "create the TUN interface (TUNSETIFF)",
            source: error,
        },
    })?;
    // Persistent, the device goes with the container's network namespace,
    // which the kernel tears down in the background. Otherwise closing
    // den's descriptor unregisters it on the spot, and that waits for an
    // RCU grace period: ~25 ms added to every container's exit.
    netif::persist_tun(tun).map_err(|source| TunError::Other {
        step: "keep the TUN interface with its namespace (TUNSETPERSIST)",
        source,
    })
}

type StepError = (&'static str, io::Error);

fn configure_interfaces() -> Result<(), StepError> {
    let interfaces =
        Interfaces::open().map_err(|e| ("open a socket to configure interfaces", e))?;
    interfaces
        .set_flags(c"lo", netif::LOOPBACK_UP)
        .map_err(|e| ("bring the loopback interface up", e))?;
    interfaces
        .set_address(TUN_NAME, CONTAINER_ADDR)
        .map_err(|e| ("set tap0's address", e))?;
    interfaces
        .set_netmask(TUN_NAME, netmask(PREFIX_LEN))
        .map_err(|e| ("set tap0's netmask", e))?;
    interfaces
        .set_mtu(TUN_NAME, MTU)
        .map_err(|e| ("set tap0's MTU", e))?;
    interfaces
        .set_flags(TUN_NAME, libc::IFF_UP | libc::IFF_RUNNING)
        .map_err(|e| ("bring tap0 up", e))?;
    interfaces
        .add_default_route(GATEWAY_ADDR)
        .map_err(|e| ("add the default route via 10.0.2.2", e))
}

fn netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix_len)))
}
