//! The socket between the supervisor and init.
//!
//! Init reports a setup failure (a `Failure`), or hands over the master side of
//! the container's terminal. The socket is also init's lifeline: when den
//! dies, init sees the hang-up.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::failure::Failure;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketFlags, SocketType, recvmsg, sendmsg, socketpair,
};

const TAG_ERROR: u8 = b'E';
const TAG_TERMINAL: u8 = b'T';
/// Longer setup errors are cut; they are one line of context in practice.
const MAX_MESSAGE: usize = 8192;

/// One end of the channel.
pub struct Channel(OwnedFd);

/// What init said.
pub enum Message {
    /// Setup failed; init exits with `EXIT_DEN_FAILED`.
    Failed(Failure),
    /// The master side of the command's terminal.
    Terminal(OwnedFd),
    /// Init went away without a word.
    Closed,
}

/// A connected pair: (supervisor end, init end). Both close on exec.
pub fn pair() -> std::io::Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    Ok((Channel(a), Channel(b)))
}

impl Channel {
    pub fn send_failure(&self, failure: &Failure) {
        let mut bytes = vec![TAG_ERROR];
        bytes.extend_from_slice(&failure.encode());
        bytes.truncate(MAX_MESSAGE);
        // Nothing more can be done if the supervisor is gone.
        let _ = sendmsg(
            &self.0,
            &[IoSlice::new(&bytes)],
            &mut SendAncillaryBuffer::default(),
            SendFlags::empty(),
        );
    }

    pub fn send_terminal(&self, master: BorrowedFd<'_>) -> std::io::Result<()> {
        self.send_fd(TAG_TERMINAL, master)
    }

    /// One tag byte with one file descriptor.
    pub fn send_fd(&self, tag: u8, fd: BorrowedFd<'_>) -> std::io::Result<()> {
        let fds = [fd];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        sendmsg(
            &self.0,
            &[IoSlice::new(&[tag])],
            &mut control,
            SendFlags::empty(),
        )?;
        Ok(())
    }

    /// Sends one tag byte alone.
    pub fn send_tag(&self, tag: u8) -> std::io::Result<()> {
        sendmsg(
            &self.0,
            &[IoSlice::new(&[tag])],
            &mut SendAncillaryBuffer::default(),
            SendFlags::empty(),
        )?;
        Ok(())
    }

    /// Waits for a tag byte and the descriptor sent with it, if any;
    /// `None` when the other end is gone.
    pub fn receive_tagged(&self) -> std::io::Result<Option<(u8, Option<OwnedFd>)>> {
        let mut byte = [0u8; 1];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = recvmsg(
            &self.0,
            &mut [IoSliceMut::new(&mut byte)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        let fd = control.drain().find_map(|message| match message {
            RecvAncillaryMessage::ScmRights(mut fds) => fds.next(),
            _ => None,
        });
        Ok((received.bytes == 1).then_some((byte[0], fd)))
    }

    /// Waits for init's message (blocking), or reads one already sent
    /// when `wait` is false.
    pub fn receive(&self, wait: bool) -> std::io::Result<Message> {
        let mut bytes = vec![0u8; MAX_MESSAGE];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let flags = if wait {
            RecvFlags::CMSG_CLOEXEC
        } else {
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT
        };
        let received = match recvmsg(
            &self.0,
            &mut [IoSliceMut::new(&mut bytes)],
            &mut control,
            flags,
        ) {
            Ok(received) => received,
            Err(rustix::io::Errno::AGAIN) => return Ok(Message::Closed),
            Err(err) => return Err(err.into()),
        };
        let mut fd = None;
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = message {
                fd = fds.next();
            }
        }
        Ok(match (bytes[..received.bytes].first(), fd) {
            (Some(&TAG_TERMINAL), Some(fd)) => Message::Terminal(fd),
            (Some(&TAG_ERROR), _) => Message::Failed(Failure::decode(&bytes[1..received.bytes])),
            _ => Message::Closed,
        })
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
