//! Getting layers into the store: each one decompressed, verified and
//! unpacked once into `layers/<diff-id hex>/`, under a per-layer lock so
//! concurrent den processes wait for each other instead of unpacking the
//! same layer twice.

use std::collections::HashMap;
use std::fs::{DirBuilder, File};
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::chunks;
use super::digest::{Digest, Hasher, HashingReader};
use super::layout::Layout;
use super::lock::{self, TempEntry};
use super::parallel;
use super::store::Store;
use super::unpack;

/// At most this many layers are unpacked at once.
const MAX_WORKERS: usize = 4;

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
        self.open_blob(&layer.digest, layer.size)
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
/// parallel; all threads are joined before this returns. Returns the
/// size of each layer it unpacked (see `unpack_verified`), by diff ID.
pub fn ensure_all(
    store: &Store,
    source: &dyn BlobSource,
    layers: &[LayerBlob],
    progress: Progress<'_>,
) -> anyhow::Result<HashMap<Digest, u64>> {
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
    // Read only now: a run whose layers are all in reads no settings.
    let limit = match missing.is_empty() {
        true => None,
        false => UnpackLimit::from_settings(store)?,
    };
    let sizes = parallel::try_map(&missing, source.workers(), |layer| {
        ensure(store, source, layer, limit.as_ref(), progress)
    });
    // The limit is the image's: over it, every layer still unpacking
    // failed, and naming the first of them would blame it.
    limit.as_ref().map_or(Ok(()), UnpackLimit::check)?;
    let sizes = sizes?;
    Ok(missing
        .iter()
        .zip(sizes)
        .filter_map(|(layer, size)| Some((layer.diff_id.clone(), size?)))
        .collect())
}

/// `max-unpacked-size` from den's settings: what the layers one import
/// unpacks may add up to, counted as uncompressed tar bytes as they are
/// decompressed, so a gzip bomb stops there and not at a full disk.
struct UnpackLimit {
    max: u64,
    /// The settings file that set it, for the message.
    file: PathBuf,
    used: AtomicU64,
}

impl UnpackLimit {
    fn from_settings(store: &Store) -> anyhow::Result<Option<UnpackLimit>> {
        let settings = store.environment().settings()?;
        let Some(max) = settings.max_unpacked_size else {
            return Ok(None);
        };
        Ok(Some(UnpackLimit {
            max,
            file: settings.file,
            used: AtomicU64::new(0),
        }))
    }

    /// Counts `bytes` more; false once the total is over the limit.
    fn charge(&self, bytes: usize) -> bool {
        let bytes = bytes as u64;
        self.used.fetch_add(bytes, Ordering::Relaxed) + bytes <= self.max
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.used.load(Ordering::Relaxed) > self.max {
            bail!(
                "the image unpacks to more than {} bytes, the `max-unpacked-size` set in `{}`; \
                 den stopped there (raise the setting to import this image)",
                self.max,
                self.file.display()
            );
        }
        Ok(())
    }
}

/// Unpacks one layer unless it is already there; its size if it did.
fn ensure(
    store: &Store,
    source: &dyn BlobSource,
    layer: &LayerBlob,
    limit: Option<&UnpackLimit>,
    progress: Progress<'_>,
) -> anyhow::Result<Option<u64>> {
    let dest = store.layer_path(&layer.diff_id);
    if dest.is_dir() {
        progress(Event::Present { layer });
        return Ok(None);
    }
    let _lock = lock::lock_exclusive(&store.lock_path(&format!("layer-{}", layer.diff_id.hex())))?;
    if dest.is_dir() {
        progress(Event::Present { layer });
        return Ok(None); // another den unpacked it while we waited
    }
    let started = Instant::now();
    progress(Event::Fetching { layer });
    let tmp = TempEntry::dir(&store.tmp_path(), "layer")?;
    let size = unpack_verified(tmp.path(), source, layer, limit, progress)
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
    Ok(Some(size))
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
/// size and the diff ID of the uncompressed tar. Returns the bytes of
/// its files, symlink targets and `meta`, as a walk would count them.
///
/// Four stages on scoped threads, joined by bounded channels of chunks
/// (see `chunks`) and all joined before this returns: download (and
/// hash the blob), decompress (charging `limit`), hash the tar, unpack it. Decompression,
/// the longest stage for gzip, does nothing else.
fn unpack_verified(
    dir: &Path,
    source: &dyn BlobSource,
    layer: &LayerBlob,
    limit: Option<&UnpackLimit>,
    progress: Progress<'_>,
) -> anyhow::Result<u64> {
    let root = dir.join("fs");
    DirBuilder::new().mode(0o755).create(&root)?;
    let mut meta = BufWriter::new(File::create(dir.join("meta"))?);
    let buffers = chunks::Buffers::default();
    let (blob_out, blob_in) = chunks::channel(&buffers);
    let (tar_out, tar_in) = chunks::channel(&buffers);
    let (hashed_out, hashed_in) = chunks::channel(&buffers);

    let (downloaded, decompressed, hashed, unpacked) = std::thread::scope(|scope| {
        let download = scope.spawn(move || download(source, layer, &blob_out, progress));
        let decompress = scope.spawn(move || decompress(blob_in, &tar_out, limit));
        let hash = scope.spawn(move || hash(tar_in, &hashed_out));
        let unpacked = unpack_tar(hashed_in, &root, &mut meta);
        // Each stage ends once the next one's receiver is gone (or it
        // has sent everything), so these joins cannot hang.
        let panicked = || anyhow::anyhow!("a layer thread panicked");
        (
            download.join().unwrap_or_else(|_| Err(panicked())),
            decompress.join().unwrap_or_else(|_| Err(panicked())),
            hash.join().unwrap_or_else(|_| Err(panicked())),
            unpacked,
        )
    });
    // An earlier stage's error explains a later one's (a truncated tar),
    // not the other way round.
    downloaded?;
    decompressed?;
    let bytes = unpacked?;
    let diff_id = hashed?;
    if diff_id != layer.diff_id {
        bail!(
            "its uncompressed content hashes to {diff_id} but the image config says {}; the image is corrupt",
            layer.diff_id
        );
    }
    let meta = meta.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(bytes + meta.metadata()?.len())
}

/// Download stage: the blob, checked against its digest and size.
fn download(
    source: &dyn BlobSource,
    layer: &LayerBlob,
    out: &chunks::Sender<'_>,
    progress: Progress<'_>,
) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<()> {
        let mut blob = HashingReader::new(Counting {
            // One byte past the manifest's size shows a longer blob
            // without reading on: it could be endless.
            inner: source.open(layer)?.take(layer.size.saturating_add(1)),
            layer,
            progress,
        });
        if !out.pump(&mut blob).context("cannot read the layer blob")? {
            return Ok(()); // a later stage failed; its error explains
        }
        let (blob_digest, blob_size, _) = blob.finish().context("cannot read the layer blob")?;
        let fix = if source.remote() {
            "the registry serves a damaged blob"
        } else {
            "export the image again"
        };
        if blob_size > layer.size {
            bail!(
                "the blob is longer than the {} bytes the manifest gives it; {fix}",
                layer.size
            );
        }
        if blob_digest != layer.digest || blob_size != layer.size {
            bail!(
                "the blob is corrupt: it hashes to {blob_digest} ({blob_size} bytes, the manifest says {} bytes); {fix}",
                layer.size
            );
        }
        Ok(())
    })();
    if let Err(err) = &result {
        out.fail(err);
    }
    result
}

/// Decompress stage: blob chunks in, tar chunks out, charged to `limit`.
fn decompress(
    blob: chunks::Reader<'_>,
    out: &chunks::Sender<'_>,
    limit: Option<&UnpackLimit>,
) -> anyhow::Result<()> {
    let result = (|| -> anyhow::Result<()> {
        let decoder = Decoder::sniff(blob).context("cannot read the layer blob")?;
        let mut metered = Metered {
            inner: decoder,
            limit,
        };
        let pumped = out.pump(&mut metered);
        limit.map_or(Ok(()), UnpackLimit::check)?;
        if !pumped.context("cannot decompress the layer blob")? {
            return Ok(()); // a later stage failed; its error explains
        }
        // Reading on to the end lets the download stage hash it all.
        metered.inner.finish().context("cannot read the layer blob")
    })();
    if let Err(err) = &result {
        out.fail(err);
    }
    result
}

/// Hash stage: the diff ID of the tar passing through.
fn hash(mut tar: chunks::Reader<'_>, out: &chunks::Sender<'_>) -> anyhow::Result<Digest> {
    let mut hasher = Hasher::default();
    while let Some(chunk) = tar.next_chunk() {
        match chunk {
            Ok(chunk) => {
                hasher.update(&chunk);
                if !out.send(chunk) {
                    bail!("the unpack stopped early"); // and says why
                }
            }
            Err(err) => {
                out.forward(err);
                bail!("an earlier stage failed"); // and says why
            }
        }
    }
    Ok(hasher.finish().0)
}

/// Unpack stage, on the calling thread; the bytes `unpack` made.
fn unpack_tar(tar: chunks::Reader<'_>, root: &Path, meta: &mut dyn Write) -> anyhow::Result<u64> {
    let (mut rest, bytes) = unpack::unpack(tar, root, meta)?;
    // The diff ID covers what follows the end-of-archive marker too.
    io::copy(&mut rest, &mut io::sink()).context("cannot decompress the layer blob")?;
    Ok(bytes)
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

/// A decoder's output charged to the import's `UnpackLimit`: the read
/// that takes the total over it fails (`UnpackLimit::check` says why).
struct Metered<'a, R> {
    inner: R,
    limit: Option<&'a UnpackLimit>,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.limit {
            Some(limit) if !limit.charge(n) => Err(io::Error::other("over max-unpacked-size")),
            _ => Ok(n),
        }
    }
}

/// Decompression chosen by magic bytes (media types are not always
/// accurate); uncompressed is the fallback.
enum Decoder<'a> {
    Plain(chunks::Reader<'a>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<chunks::Reader<'a>>>),
    Zstd(zstd::stream::read::Decoder<'static, chunks::Reader<'a>>),
}

impl<'a> Decoder<'a> {
    fn sniff(mut blob: chunks::Reader<'a>) -> io::Result<Decoder<'a>> {
        let head = blob.fill_buf()?;
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(blob)))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(blob)?)
        } else {
            Decoder::Plain(blob)
        })
    }

    /// Reads the compressed blob to its end.
    fn finish(self) -> io::Result<()> {
        let mut blob = match self {
            Decoder::Plain(blob) => blob,
            Decoder::Gzip(decoder) => decoder.into_inner(),
            Decoder::Zstd(decoder) => decoder.finish(),
        };
        io::copy(&mut blob, &mut io::sink())?;
        Ok(())
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
        let big: Vec<u8> = (0..1_000_000u32).map(|j| (j % 253) as u8).collect();
        tar.file("d/big", &big, 0o600)
            .symlink("d/link", "../f1")
            .hardlink("d/again", "f2");
        let layer = testutil::layer(&tar.finish(), Compression::Gzip);
        let blob = LayerBlob {
            digest: Digest::of(&layer.blob),
            size: layer.blob.len() as u64,
            diff_id: layer.diff_id.clone(),
        };
        (layer, blob)
    }

    #[test]
    fn the_stages_unpack_and_verify() {
        let (layer, blob) = fixture();
        let dir = tempfile::tempdir().unwrap();
        let source = Flaky {
            blob: layer.blob.clone(),
            cut: None,
        };
        let size = unpack_verified(dir.path(), &source, &blob, None, &quiet).unwrap();
        assert!(dir.path().join("fs/f199").is_file());
        assert_eq!(size, crate::image::store::tree_size(dir.path()));
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
        let err = unpack_verified(dir.path(), &source, &blob, None, &quiet).unwrap_err();
        assert!(
            format!("{err:#}").contains("connection reset by test"),
            "{err:#}"
        );
    }

    #[test]
    fn the_unpack_limit_stops_a_gzip_bomb_early() {
        let mut tar = TarBuilder::new();
        tar.file("zeros", &vec![0; 16 << 20], 0o644);
        let layer = testutil::layer(&tar.finish(), Compression::Gzip);
        let blob = LayerBlob {
            digest: Digest::of(&layer.blob),
            size: layer.blob.len() as u64,
            diff_id: layer.diff_id.clone(),
        };
        let source = Flaky {
            blob: layer.blob,
            cut: None,
        };
        let limit = UnpackLimit {
            max: 1 << 20,
            file: PathBuf::from("/home/u/.config/den/config.yaml"),
            used: AtomicU64::new(0),
        };
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_verified(dir.path(), &source, &blob, Some(&limit), &quiet).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "the image unpacks to more than 1048576 bytes, the `max-unpacked-size` set in \
             `/home/u/.config/den/config.yaml`; den stopped there (raise the setting to import \
             this image)"
        );
        let used = limit.used.load(Ordering::Relaxed);
        assert!(used < 2 << 20, "decompressed {used} bytes");
    }

    #[test]
    fn a_blob_longer_than_its_descriptor_is_not_read_to_its_end() {
        let (layer, mut blob) = fixture();
        blob.size -= 1;
        let source = Flaky {
            blob: layer.blob,
            cut: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let err = unpack_verified(dir.path(), &source, &blob, None, &quiet).unwrap_err();
        let expected = format!(
            "the blob is longer than the {} bytes the manifest gives it",
            blob.size
        );
        assert!(format!("{err:#}").contains(&expected), "{err:#}");
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
        let err = unpack_verified(dir.path(), &source, &blob, None, &quiet).unwrap_err();
        assert!(
            format!("{err:#}").contains("the blob is corrupt"),
            "{err:#}"
        );
    }
}
