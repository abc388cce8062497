//! Building IPv4 packets that go to the container without smoltcp (UDP
//! replies, ICMP echo replies).

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpProtocol, Ipv4Packet, Ipv4Repr};

/// Fills `buffer` with an IPv4 packet from `src` to `dst` whose payload
/// (`payload_len` bytes) `fill_payload` writes, and returns the packet.
pub fn ipv4_packet(
    buffer: &mut Vec<u8>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    payload_len: usize,
    fill_payload: impl FnOnce(&mut [u8]),
) -> &[u8] {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len,
        hop_limit: 64,
    };
    let len = repr.buffer_len() + payload_len;
    buffer.resize(len, 0);
    let mut packet = Ipv4Packet::new_unchecked(&mut buffer[..len]);
    repr.emit(&mut packet, &ChecksumCapabilities::default());
    fill_payload(packet.payload_mut());
    &buffer[..len]
}
