//! ICMP echo: answered for the gateway and the DNS address only, so `ping
//! 10.0.2.2` works and a ping to anything else fails honestly (forwarding
//! needs unprivileged ICMP sockets, which `net.ipv4.ping_group_range`
//! usually forbids).

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet};

use super::device::TunDevice;
use super::{DNS_ADDR, GATEWAY_ADDR};

/// Answers `packet` (an IPv4 ICMP packet) if it is an echo request to one
/// of den's own addresses; anything else is dropped.
pub fn answer_echo(ip: &Ipv4Packet<&[u8]>, device: &TunDevice, scratch: &mut Vec<u8>) {
    let to = ip.dst_addr();
    if to != GATEWAY_ADDR && to != DNS_ADDR {
        return;
    }
    let caps = ChecksumCapabilities::default();
    let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
        return;
    };
    let Ok(Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    }) = Icmpv4Repr::parse(&icmp, &caps)
    else {
        return;
    };
    let reply = Icmpv4Repr::EchoReply {
        ident,
        seq_no,
        data,
    };
    let packet = super::wire::ipv4_packet(
        scratch,
        to,
        ip.src_addr(),
        IpProtocol::Icmp,
        reply.buffer_len(),
        |payload| reply.emit(&mut Icmpv4Packet::new_unchecked(payload), &caps),
    );
    device.write_packet(packet);
}
