//! Creating the container's TUN device, in the *current* network namespace.
//!
//! The netns a TUN belongs to is the netns of the process that opened
//! `/dev/net/tun`, so the container's init calls [`create_tun`] inside the
//! new namespaces and passes the fd to den over SCM_RIGHTS. Configuration is
//! done with plain ioctls on an `AF_INET` datagram socket (no netlink):
//! `lo` up, `tap0` 10.0.2.100/24 with MTU 65520, up, default route via
//! 10.0.2.2.

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{CONTAINER_ADDR, GATEWAY_ADDR, MTU, PREFIX_LEN};

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
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd == -1 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => TunError::NoAccess,
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => TunError::Missing,
            _ => TunError::Other {
                step: "open /dev/net/tun",
                source: error,
            },
        });
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn attach_interface(tun: &OwnedFd) -> Result<(), TunError> {
    let mut req = ifreq_for(TUN_NAME);
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: a valid ifreq for TUNSETIFF on a /dev/net/tun descriptor.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &req) } == -1 {
        let error = io::Error::last_os_error();
        return Err(match error.raw_os_error() {
            Some(libc::EPERM) => TunError::SetIffDenied,
            _ => TunError::Other {
                step: "create the TUN interface (TUNSETIFF)",
                source: error,
            },
        });
    }
    // Persistent, the device goes with the container's network namespace,
    // which the kernel tears down in the background. Otherwise closing
    // den's descriptor unregisters it on the spot, and that waits for an
    // RCU grace period: ~25 ms added to every container's exit.
    // SAFETY: TUNSETPERSIST takes its flag by value.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } == -1 {
        return Err(TunError::Other {
            step: "keep the TUN interface with its namespace (TUNSETPERSIST)",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

type StepError = (&'static str, io::Error);

fn configure_interfaces() -> Result<(), StepError> {
    let sock = control_socket().map_err(|e| ("open a socket to configure interfaces", e))?;
    let fd = sock.as_raw_fd();
    set_flags(
        fd,
        c"lo",
        libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING,
    )
    .map_err(|e| ("bring the loopback interface up", e))?;
    set_address(fd, libc::SIOCSIFADDR, CONTAINER_ADDR).map_err(|e| ("set tap0's address", e))?;
    set_address(fd, libc::SIOCSIFNETMASK, netmask(PREFIX_LEN))
        .map_err(|e| ("set tap0's netmask", e))?;
    set_mtu(fd, MTU).map_err(|e| ("set tap0's MTU", e))?;
    set_flags(fd, TUN_NAME, libc::IFF_UP | libc::IFF_RUNNING).map_err(|e| ("bring tap0 up", e))?;
    add_default_route(fd, GATEWAY_ADDR).map_err(|e| ("add the default route via 10.0.2.2", e))
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq_for(name: &CStr) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.to_bytes()) {
        *dst = *src as libc::c_char;
    }
    req
}

fn sockaddr_of(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads
    // it back as sockaddr_in because of sin_family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn netmask(prefix_len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix_len)))
}

fn ioctl(fd: RawFd, request: libc::c_ulong, arg: *const libc::c_void) -> io::Result<()> {
    // SAFETY: callers pass a pointer to the struct `request` expects.
    if unsafe { libc::ioctl(fd, request, arg) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_flags(fd: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    let mut req = ifreq_for(name);
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    ioctl(fd, libc::SIOCSIFFLAGS, (&raw const req).cast())
}

fn set_address(fd: RawFd, request: libc::c_ulong, addr: Ipv4Addr) -> io::Result<()> {
    let mut req = ifreq_for(TUN_NAME);
    req.ifr_ifru.ifru_addr = sockaddr_of(addr);
    ioctl(fd, request, (&raw const req).cast())
}

fn set_mtu(fd: RawFd, mtu: usize) -> io::Result<()> {
    let mut req = ifreq_for(TUN_NAME);
    req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    ioctl(fd, libc::SIOCSIFMTU, (&raw const req).cast())
}

/// `struct rtentry` of <net/route.h>, which the libc crate lacks for glibc.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn add_default_route(fd: RawFd, gateway: Ipv4Addr) -> io::Result<()> {
    let route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_of(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_of(gateway),
        rt_genmask: sockaddr_of(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(fd, libc::SIOCADDRT, (&raw const route).cast())
}
