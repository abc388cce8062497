//! The TUN fd as a smoltcp device.
//!
//! Not `TunTapInterface`: the event loop reads packets itself (so it can
//! look at each one before the stack does: new SYNs, UDP, ICMP) and queues
//! the ones meant for smoltcp here. Transmitting writes straight to the fd.
//! Packet buffers are recycled, so a 64 KiB read allocates nothing.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use super::MTU;

/// Packets read from the TUN per wake-up before the stack runs.
pub const READ_BATCH: usize = 64;

pub struct TunDevice {
    fd: OwnedFd,
    rx_queue: VecDeque<Vec<u8>>,
    free: Vec<Vec<u8>>,
    tx_buffer: Vec<u8>,
}

impl TunDevice {
    pub fn new(fd: OwnedFd) -> io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        Ok(Self {
            fd,
            rx_queue: VecDeque::new(),
            free: Vec::new(),
            tx_buffer: vec![0; MTU],
        })
    }

    /// Reads one packet; `None` when nothing is waiting.
    pub fn read_packet(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut buffer = self.free.pop().unwrap_or_else(|| vec![0; MTU]);
        buffer.resize(MTU, 0);
        match rustix::io::read(&self.fd, &mut buffer) {
            Ok(len) => {
                buffer.truncate(len);
                Ok(Some(buffer))
            }
            Err(rustix::io::Errno::AGAIN) => {
                self.free.push(buffer);
                Ok(None)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Hands a packet read by [`read_packet`](Self::read_packet) to smoltcp.
    pub fn queue_for_stack(&mut self, packet: Vec<u8>) {
        self.rx_queue.push_back(packet);
    }

    /// Returns a packet the loop handled itself, for reuse.
    pub fn recycle(&mut self, packet: Vec<u8>) {
        self.free.push(packet);
    }

    /// Writes one IP packet to the container. A full TUN queue drops it,
    /// as a congested link would; TCP retransmits.
    pub fn write_packet(&self, packet: &[u8]) {
        let _ = rustix::io::write(&self.fd, packet);
    }
}

impl AsFd for TunDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub struct RxToken<'a> {
    packet: Vec<u8>,
    free: &'a mut Vec<Vec<u8>>,
}

pub struct TxToken<'a> {
    fd: BorrowedFd<'a>,
    buffer: &'a mut Vec<u8>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.packet);
        self.free.push(self.packet);
        result
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.buffer.resize(len.max(self.buffer.len()), 0);
        let packet = &mut self.buffer[..len];
        let result = f(packet);
        let _ = rustix::io::write(self.fd, packet);
        result
    }
}

impl phy::Device for TunDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let packet = self.rx_queue.pop_front()?;
        let rx = RxToken {
            packet,
            free: &mut self.free,
        };
        let tx = TxToken {
            fd: self.fd.as_fd(),
            buffer: &mut self.tx_buffer,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            fd: self.fd.as_fd(),
            buffer: &mut self.tx_buffer,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps.max_burst_size = None;
        // The container's kernel sent valid checksums: skip checking them.
        let mut checksum = ChecksumCapabilities::default();
        checksum.ipv4 = Checksum::Tx;
        checksum.tcp = Checksum::Tx;
        checksum.udp = Checksum::Tx;
        checksum.icmpv4 = Checksum::Tx;
        caps.checksum = checksum;
        caps
    }
}
