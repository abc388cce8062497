//! Network interfaces of the current network namespace, configured with
//! plain ioctls on an `AF_INET` datagram socket (no netlink), and the TUN
//! device.

use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A socket to configure interfaces with.
pub struct Interfaces(OwnedFd);

impl Interfaces {
    pub fn open() -> io::Result<Interfaces> {
        // SAFETY: plain arguments; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(Interfaces(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn set_flags(&self, name: &CStr, flags: libc::c_int) -> io::Result<()> {
        let mut req = ifreq_for(name);
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        ioctl(
            self.0.as_raw_fd(),
            libc::SIOCSIFFLAGS,
            (&raw const req).cast(),
        )
    }

    pub fn set_address(&self, name: &CStr, addr: Ipv4Addr) -> io::Result<()> {
        self.set_ipv4(name, libc::SIOCSIFADDR, addr)
    }

    pub fn set_netmask(&self, name: &CStr, mask: Ipv4Addr) -> io::Result<()> {
        self.set_ipv4(name, libc::SIOCSIFNETMASK, mask)
    }

    fn set_ipv4(&self, name: &CStr, request: libc::c_ulong, addr: Ipv4Addr) -> io::Result<()> {
        let mut req = ifreq_for(name);
        req.ifr_ifru.ifru_addr = sockaddr_of(addr);
        ioctl(self.0.as_raw_fd(), request, (&raw const req).cast())
    }

    pub fn set_mtu(&self, name: &CStr, mtu: usize) -> io::Result<()> {
        let mut req = ifreq_for(name);
        req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        ioctl(
            self.0.as_raw_fd(),
            libc::SIOCSIFMTU,
            (&raw const req).cast(),
        )
    }

    pub fn add_default_route(&self, gateway: Ipv4Addr) -> io::Result<()> {
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
        ioctl(
            self.0.as_raw_fd(),
            libc::SIOCADDRT,
            (&raw const route).cast(),
        )
    }
}

/// Brings the loopback interface of the current network namespace up.
pub fn bring_loopback_up() -> io::Result<()> {
    Interfaces::open()?.set_flags(c"lo", LOOPBACK_UP)
}

/// The flags of a loopback interface that is up.
pub const LOOPBACK_UP: libc::c_int = libc::IFF_UP | libc::IFF_LOOPBACK | libc::IFF_RUNNING;

/// Opens `/dev/net/tun`.
pub fn open_tun() -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// TUNSETIFF: a TUN interface `name` without packet information.
pub fn attach_tun(tun: &OwnedFd, name: &CStr) -> io::Result<()> {
    let mut req = ifreq_for(name);
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    ioctl(tun.as_raw_fd(), libc::TUNSETIFF, (&raw const req).cast())
}

/// TUNSETPERSIST: the interface outlives the descriptor.
pub fn persist_tun(tun: &OwnedFd) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its flag by value.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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

fn ioctl(fd: RawFd, request: libc::c_ulong, arg: *const libc::c_void) -> io::Result<()> {
    // SAFETY: callers pass a pointer to the struct `request` expects.
    if unsafe { libc::ioctl(fd, request, arg) } == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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
