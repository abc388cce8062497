//! Getting layers into the store: each one decompressed, verified and
//! unpacked once into `layers/<diff-id hex>/`, under a per-layer lock so
//! concurrent den processes wait for each other instead of unpacking the
//! same layer twice.

use std::fs::{DirBuilder, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::digest::{Digest, HashingReader};
use super::layout::Layout;
use super::lock::{self, TempEntry};
use super::store::Store;
use super::unpack;

/// At most this many layers are unpacked at once.
const MAX_WORKERS: usize = 4;
const READ_BUFFER: usize = 256 << 10;
/// Decompressed chunks in flight between a layer's two stages.
const CHANNEL_CHUNKS: usize = 8;

/// A layer as the manifest and the config describe it.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// Where layer blobs come from: an OCI layout or a registry.
pub trait BlobSource: Sync {
    /// The compressed blob as a stream; the caller verifies it.
    fn open(&self, layer: &LayerBlob) -> anyhow::Result<Box<dyn Read + Send + '_>>;

    /// How many layers to fetch and unpack at once.
    fn workers(&self) -> usize {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(MAX_WORKERS)
    }

    /// Whether a failed blob is the registry's fault rather than a bad
    /// export (for the error message).
    fn remote(&self) -> bool {
        false
    }
}

impl BlobSource for Layout {
    fn open(&self, layer: &LayerBlob) -> anyhow::Result<Box<dyn Read + Send + '_>> {
        Ok(self.open_blob(&layer.digest)?.0)
    }
}

/// What happens to each layer, for progress output.
#[derive(Debug)]
pub enum Event<'a> {
    /// This many layers (and compressed bytes) are missing and will be
    /// fetched; sent once, before any `Fetching`.
    Planned { bytes: u64, layers: usize },
    /// The layer is being fetched (or read) and unpacked.
    Fetching { layer: &'a LayerBlob },
    /// `bytes` more of its compressed blob arrived.
    Bytes { layer: &'a LayerBlob, bytes: u64 },
    /// It is in the store now.
    Done {
        layer: &'a LayerBlob,
        elapsed: Duration,
    },
    /// It was in the store already.
    Present { layer: &'a LayerBlob },
}

pub type Progress<'a> = &'a (dyn Fn(Event<'_>) + Sync);

/// Progress that goes nowhere.
pub fn quiet(_: Event<'_>) {}

/// Makes sure every layer is in the store, unpacking missing ones in
/// parallel; all threads are joined before this returns.
pub fn ensure_all(
    store: &Store,
    source: &dyn BlobSource,
    layers: &[LayerBlob],
    progress: Progress<'_>,
) -> anyhow::Result<()> {
    let mut missing: Vec<&LayerBlob> = Vec::new();
    for layer in layers {
        let seen = missing.iter().any(|m| m.diff_id == layer.diff_id);
        if seen {
            continue;
        }
        if store.layer_path(&layer.diff_id).is_dir() {
            progress(Event::Present { layer });
        } else {
            missing.push(layer);
        }
    }
    if !missing.is_empty() {
        progress(Event::Planned {
            bytes: missing.iter().map(|layer| layer.size).sum(),
            layers: missing.len(),
        });
    }
    let workers = source.workers().min(missing.len());
    if workers <= 1 {
        return missing
            .iter()
            .try_for_each(|layer| ensure(store, source, layer, progress));
    }
    let next = AtomicUsize::new(0);
    // After a rejected layer the image fails anyway: start no more.
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<anyhow::Result<()>>>> =
        Mutex::new(missing.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(layer) = missing.get(i) else { break };
                        if failed.load(Ordering::Relaxed) {
                            break;
                        }
                        let result = ensure(store, source, layer, progress);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                    }
                })
            })
            .collect();
        // Joined explicitly: the scope alone only waits for the closures.
        for handle in handles {
            let _ = handle.join();
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.into_iter().flatten().collect()
}

/// Unpacks one layer unless it is already there.
fn ensure(
    store: &Store,
    source: &dyn BlobSource,
    layer: &LayerBlob,
    progress: Progress<'_>,
) -> anyhow::Result<()> {
    let dest = store.layer_path(&layer.diff_id);
    if dest.is_dir() {
        progress(Event::Present { layer });
        return Ok(());
    }
    let _lock = lock::lock_exclusive(&store.lock_path(&format!("layer-{}", layer.diff_id.hex())))?;
    if dest.is_dir() {
        progress(Event::Present { layer });
        return Ok(()); // another den unpacked it while we waited
    }
    let started = Instant::now();
    progress(Event::Fetching { layer });
    let tmp = TempEntry::dir(&store.tmp_path(), "layer")?;
    unpack_verified(tmp.path(), source, layer, progress)
        .map_err(|err| {
            if is_disk_full(&err) {
                anyhow::anyhow!(
                    "the disk holding `{}` is full while unpacking layer {}; free space or set DEN_DATA_DIR",
                    store.root().display(),
                    layer.digest
                )
            } else {
                err
            }
        })
        .with_context(|| {
            format!(
                "layer {} was rejected and nothing of it was kept",
                layer.digest
            )
        })?;
    tmp.persist(&dest)?;
    progress(Event::Done {
        layer,
        elapsed: started.elapsed(),
    });
    #[cfg(test)]
    super::testutil::note("unpack", &dest);
    Ok(())
}

/// Whether an `ENOSPC` (or `EDQUOT`) is somewhere in the chain.
pub(crate) fn is_disk_full(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            )
        })
    })
}

/// Unpacks into `dir/fs` (+ `dir/meta`), checking the blob digest and
/// size and the diff ID of the uncompressed tar.
///
/// Two scoped threads: one reads the blob, hashes and decompresses it
/// into 256 KiB chunks; the other hashes the tar and unpacks it. A
/// bounded channel joins them; both are joined before this returns.
fn unpack_verified(
    dir: &Path,
    source: &dyn BlobSource,
    layer: &LayerBlob,
    progress: Progress<'_>,
) -> anyhow::Result<()> {
    let root = dir.join("fs");
    DirBuilder::new().mode(0o755).create(&root)?;
    let mut meta = BufWriter::new(File::create(dir.join("meta"))?);
    let (sender, receiver) = mpsc::sync_channel::<io::Result<Vec<u8>>>(CHANNEL_CHUNKS);

    let (fetched, unpacked) = std::thread::scope(|scope| {
        let fetch = scope.spawn(move || fetch_and_decompress(source, layer, &sender, progress));
        let unpacked = (|| -> anyhow::Result<Digest> {
            let tar = HashingReader::new(ChunkReader::new(receiver));
            let tar = unpack::unpack(tar, &root, &mut meta)?;
            let (diff_id, _, _) = tar.finish().context("cannot decompress the layer blob")?;
            Ok(diff_id)
        })();
        // The receiver is gone by now, so a fetch blocked on `send` ends.
        let fetched = fetch
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the layer fetch thread panicked")));
        (fetched, unpacked)
    });
    // A fetch error explains an unpack error (a truncated tar), not the
    // other way round.
    fetched?;
    let diff_id = unpacked?;
    if diff_id != layer.diff_id {
        bail!(
            "its uncompressed content hashes to {diff_id} but the image config says {}; the image is corrupt",
            layer.diff_id
        );
    }
    meta.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(())
}

/// The fetch stage: blob → digest → decompression → chunks.
fn fetch_and_decompress(
    source: &dyn BlobSource,
    layer: &LayerBlob,
    sender: &mpsc::SyncSender<io::Result<Vec<u8>>>,
    progress: Progress<'_>,
) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<bool> {
        let blob: Box<dyn Read + Send + '_> = Box::new(Counting {
            inner: source.open(layer)?,
            layer,
            progress,
        });
        let compressed = BufReader::with_capacity(READ_BUFFER, HashingReader::new(blob));
        let mut decoder = Decoder::sniff(compressed).context("cannot read the layer blob")?;
        loop {
            let mut chunk = vec![0u8; READ_BUFFER];
            let mut filled = 0;
            while filled < chunk.len() {
                match decoder.read(&mut chunk[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        return Err(anyhow::Error::new(err).context("cannot read the layer blob"));
                    }
                }
            }
            if filled == 0 {
                break;
            }
            chunk.truncate(filled);
            if sender.send(Ok(chunk)).is_err() {
                return Ok(false); // the unpacker gave up; its error explains
            }
        }
        let (blob_digest, blob_size, _) = decoder.finish().context("cannot read the layer blob")?;
        if blob_digest != layer.digest || blob_size != layer.size {
            bail!(
                "the blob is corrupt: it hashes to {blob_digest} ({blob_size} bytes, the manifest says {} bytes); {}",
                layer.size,
                if source.remote() {
                    "the registry serves a damaged blob"
                } else {
                    "export the image again"
                }
            );
        }
        Ok(true)
    })();
    if let Err(err) = &result {
        // The unpacker must not take a cut-off stream for a whole one.
        let _ = sender.send(Err(io::Error::other(format!("{err:#}"))));
    }
    result.map(|_| ())
}

/// Reports the bytes read through it as `Event::Bytes`.
struct Counting<'a, R> {
    inner: R,
    layer: &'a LayerBlob,
    progress: Progress<'a>,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            (self.progress)(Event::Bytes {
                layer: self.layer,
                bytes: n as u64,
            });
        }
        Ok(n)
    }
}

/// Reads the chunks the fetch stage sends; a closed channel is the end.
struct ChunkReader {
    receiver: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    fn new(receiver: mpsc::Receiver<io::Result<Vec<u8>>>) -> ChunkReader {
        ChunkReader {
            receiver,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.receiver.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(err)) => return Err(err),
                Err(mpsc::RecvError) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

type Blob<'a> = BufReader<HashingReader<Box<dyn Read + Send + 'a>>>;

/// Decompression chosen by magic bytes (media types are not always
/// accurate); uncompressed is the fallback.
enum Decoder<'a> {
    Plain(Blob<'a>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<Blob<'a>>>),
    Zstd(zstd::stream::read::Decoder<'static, Blob<'a>>),
}

impl<'a> Decoder<'a> {
    fn sniff(mut blob: Blob<'a>) -> io::Result<Decoder<'a>> {
        let head = blob.fill_buf()?;
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(blob)))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(blob)?)
        } else {
            Decoder::Plain(blob)
        })
    }

    /// Reads the compressed blob to its end and returns its digest, size.
    fn finish(self) -> io::Result<(Digest, u64, Box<dyn Read + Send + 'a>)> {
        let mut blob = match self {
            Decoder::Plain(blob) => blob,
            Decoder::Gzip(decoder) => decoder.into_inner(),
            Decoder::Zstd(decoder) => decoder.finish(),
        };
        io::copy(&mut blob, &mut io::sink())?;
        blob.into_inner().finish()
    }
}

impl Read for Decoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(blob) => blob.read(buf),
            Decoder::Gzip(decoder) => decoder.read(buf),
            Decoder::Zstd(decoder) => decoder.read(buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::{self, Compression, TarBuilder};

    /// Serves one blob, optionally breaking off after `cut` bytes.
    struct Flaky {
        blob: Vec<u8>,
        cut: Option<usize>,
    }

    struct Broken<'a> {
        data: &'a [u8],
        cut: Option<usize>,
        pos: usize,
    }

    impl Read for Broken<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.cut.is_some_and(|cut| self.pos >= cut) {
                return Err(io::Error::other("connection reset by test"));
            }
            let end = self.cut.unwrap_or(self.data.len()).min(self.data.len());
            let n = buf.len().min(end - self.pos).min(4096);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl BlobSource for Flaky {
        fn open(&self, _: &LayerBlob) -> anyhow::Result<Box<dyn Read + Send + '_>> {
            Ok(Box::new(Broken {
                data: &self.blob,
                cut: self.cut,
                pos: 0,
            }))
        }
    }

    fn fixture() -> (testutil::Layer, LayerBlob) {
        let mut tar = TarBuilder::new();
        for i in 0..200 {
            let data: Vec<u8> = (0..5000u32).map(|j| (j * 7 + i) as u8).collect();
            tar.file(&format!("f{i}"), &data, 0o644);
        }
        let layer = testutil::layer(&tar.finish(), Compression::Gzip);
        let blob = LayerBlob {
            digest: Digest::of(&layer.blob),
            size: layer.blob.len() as u64,
            diff_id: layer.diff_id.clone(),
        };
        (layer, blob)
    }

    #[test]
    fn two_stages_unpack_and_verify() {
        let (layer, blob) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let source = Flaky {
            blob: layer.blob.clone(),
            cut: None,
        };
        unpack_verified(dir.path(), &source, &blob, &quiet).unwrap();
        assert!(dir.path().join("fs/f199").is_file());
    }

    #[test]
    fn a_broken_stream_fails_the_layer_even_after_a_clean_prefix() {
        let (layer, blob) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let cut = layer.blob.len() / 2;
        let source = Flaky {
            blob: layer.blob.clone(),
            cut: Some(cut),
        };
        let err = unpack_verified(dir.path(), &source, &blob, &quiet).unwrap_err();
        assert!(
            format!("{err:#}").contains("connection reset by test"),
            "{err:#}"
        );
    }

    #[test]
    fn a_wrong_blob_digest_is_caught() {
        let (layer, mut blob) = fixture();
        blob.digest = Digest::of(b"something else");
        let dir = tempfile::tempdir().unwrap();
        let source = Flaky {
            blob: layer.blob.clone(),
            cut: None,
        };
        let err = unpack_verified(dir.path(), &source, &blob, &quiet).unwrap_err();
        assert!(
            format!("{err:#}").contains("the blob is corrupt"),
            "{err:#}"
        );
    }
}
