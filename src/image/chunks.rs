//! A byte stream passed between threads in chunks: each stage of a
//! layer's unpack (download, decompress, hash, unpack) runs on its own
//! thread, joined to the next by a bounded channel of chunks, so that
//! they overlap and none waits for the whole stream.
//!
//! The end of a stream is its channel closing; a producer that fails
//! sends an `Err` first, so no consumer takes a cut-off stream for a
//! whole one. A consumer that fails drops its receiver, and the
//! producer's next send tells it to stop.

use std::io::{self, BufRead, Read};
use std::sync::{Mutex, mpsc};

/// Bytes per chunk: each hand-off can wake a thread, so not too small;
/// a few chunks per stage are in memory, so not too large.
const CHUNK: usize = 512 << 10;
/// Chunks queued between two stages.
const QUEUE: usize = 4;

type Message = io::Result<Vec<u8>>;

/// Chunk buffers the consumers are done with, for the producers to
/// reuse: a fresh buffer would be zeroed and faulted in every time.
#[derive(Default)]
pub struct Buffers(Mutex<Vec<Vec<u8>>>);

impl Buffers {
    /// A buffer of `CHUNK` bytes (of old data, when reused).
    fn take(&self) -> Vec<u8> {
        let mut buf = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        buf.resize(CHUNK, 0);
        buf
    }

    fn give(&self, buf: Vec<u8>) {
        if buf.capacity() >= CHUNK {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(buf);
        }
    }
}

/// A bounded channel of chunks whose buffers come from `buffers`.
pub fn channel(buffers: &Buffers) -> (Sender<'_>, Reader<'_>) {
    let (sender, receiver) = mpsc::sync_channel(QUEUE);
    let reader = Reader {
        receiver,
        buffers,
        chunk: Vec::new(),
        pos: 0,
    };
    (Sender { sender, buffers }, reader)
}

pub struct Sender<'a> {
    sender: mpsc::SyncSender<Message>,
    buffers: &'a Buffers,
}

impl Sender<'_> {
    /// Sends a chunk; false when the consumer is gone.
    pub fn send(&self, chunk: Vec<u8>) -> bool {
        self.sender.send(Ok(chunk)).is_ok()
    }

    /// Sends what `reader` yields, in full chunks, up to its end; false
    /// when the consumer is gone (it failed, and its error explains).
    pub fn pump(&self, reader: &mut impl Read) -> io::Result<bool> {
        loop {
            let mut chunk = self.buffers.take();
            let filled = fill(reader, &mut chunk)?;
            if filled == 0 {
                self.buffers.give(chunk);
                return Ok(true);
            }
            chunk.truncate(filled);
            if !self.send(chunk) {
                return Ok(false);
            }
            if filled < CHUNK {
                return Ok(true); // `fill` stops short only at the end
            }
        }
    }

    /// Tells the consumer that the stream is broken.
    pub fn fail(&self, err: &anyhow::Error) {
        let _ = self.sender.send(Err(io::Error::other(format!("{err:#}"))));
    }

    /// Passes a failure from upstream on.
    pub fn forward(&self, err: io::Error) {
        let _ = self.sender.send(Err(err));
    }
}

/// Reads `buf` full unless the stream ends first; returns the count.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// The receiving end, read as a stream or chunk by chunk.
pub struct Reader<'a> {
    receiver: mpsc::Receiver<Message>,
    buffers: &'a Buffers,
    chunk: Vec<u8>,
    pos: usize,
}

impl Reader<'_> {
    /// The next chunk as it was sent, for a stage that passes chunks on
    /// rather than reading a stream; `None` at the end.
    pub fn next_chunk(&mut self) -> Option<io::Result<Vec<u8>>> {
        self.receiver.recv().ok()
    }
}

impl BufRead for Reader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.chunk.len() {
            match self.receiver.recv() {
                Ok(Ok(chunk)) => {
                    let done = std::mem::replace(&mut self.chunk, chunk);
                    self.buffers.give(done);
                    self.pos = 0;
                }
                Ok(Err(err)) => return Err(err),
                Err(mpsc::RecvError) => break,
            }
        }
        Ok(&self.chunk[self.pos..])
    }

    fn consume(&mut self, amount: usize) {
        self.pos = (self.pos + amount).min(self.chunk.len());
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_arrives_whole_and_buffers_are_reused() {
        let data: Vec<u8> = (0..3 * CHUNK + 100).map(|i| (i % 251) as u8).collect();
        let buffers = Buffers::default();
        let (sender, mut reader) = channel(&buffers);
        let received = std::thread::scope(|scope| {
            scope.spawn(move || assert!(sender.pump(&mut &data[..]).unwrap()));
            let mut received = Vec::new();
            reader.read_to_end(&mut received).unwrap();
            received
        });
        assert_eq!(
            received,
            (0..3 * CHUNK + 100)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>()
        );
        assert!(!buffers.0.lock().unwrap().is_empty());
    }

    #[test]
    fn a_failure_reaches_the_reader_and_a_gone_reader_stops_the_pump() {
        let buffers = Buffers::default();
        let (sender, mut reader) = channel(&buffers);
        sender.send(vec![1, 2, 3]);
        sender.fail(&anyhow::anyhow!("broken"));
        drop(sender);
        let mut received = Vec::new();
        let err = reader.read_to_end(&mut received).unwrap_err();
        assert_eq!(err.to_string(), "broken");
        assert_eq!(received, [1, 2, 3]);

        let (sender, reader) = channel(&buffers);
        drop(reader);
        assert!(!sender.pump(&mut &[0u8; 10][..]).unwrap());
    }
}
