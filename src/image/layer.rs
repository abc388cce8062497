//! Getting layers into the store: each one decompressed, verified and
//! unpacked once into `layers/<diff-id hex>/`, under a per-layer lock so
//! concurrent den processes wait for each other instead of unpacking the
//! same layer twice.

use std::fs::{DirBuilder, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, bail};

use super::digest::{Digest, HashingReader};
use super::layout::Layout;
use super::lock::{self, TempEntry};
use super::store::Store;
use super::unpack;

/// At most this many layers are unpacked at once.
const MAX_WORKERS: usize = 4;
const READ_BUFFER: usize = 256 << 10;

/// A layer as the manifest and the config describe it.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// Makes sure every layer is in the store, unpacking missing ones in
/// parallel; all threads are joined before this returns.
pub fn ensure_all(store: &Store, layout: &Layout, layers: &[LayerBlob]) -> anyhow::Result<()> {
    let mut missing: Vec<&LayerBlob> = Vec::new();
    for layer in layers {
        let seen = missing.iter().any(|m| m.diff_id == layer.diff_id);
        if !seen && !store.layer_path(&layer.diff_id).is_dir() {
            missing.push(layer);
        }
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
        .min(missing.len());
    if workers <= 1 {
        return missing
            .iter()
            .try_for_each(|layer| ensure(store, layout, layer));
    }
    let next = AtomicUsize::new(0);
    // After a rejected layer the image fails anyway: start no more.
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<anyhow::Result<()>>>> =
        Mutex::new(missing.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(layer) = missing.get(i) else { break };
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = ensure(store, layout, layer);
                    if result.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.into_iter().flatten().collect()
}

/// Unpacks one layer unless it is already there.
fn ensure(store: &Store, layout: &Layout, layer: &LayerBlob) -> anyhow::Result<()> {
    let dest = store.layer_path(&layer.diff_id);
    if dest.is_dir() {
        return Ok(());
    }
    let _lock = lock::lock_exclusive(&store.lock_path(&format!("layer-{}", layer.diff_id.hex())))?;
    if dest.is_dir() {
        return Ok(()); // another den unpacked it while we waited
    }
    let tmp = TempEntry::dir(&store.tmp_path(), "layer")?;
    unpack_verified(tmp.path(), layout, layer).with_context(|| {
        format!(
            "layer {} was rejected and nothing of it was kept",
            layer.digest
        )
    })?;
    tmp.persist(&dest)?;
    #[cfg(test)]
    super::testutil::note("unpack", &dest);
    Ok(())
}

/// Unpacks into `dir/fs` (+ `dir/meta`), checking the blob digest and
/// size and the diff ID of the uncompressed tar.
fn unpack_verified(dir: &Path, layout: &Layout, layer: &LayerBlob) -> anyhow::Result<()> {
    let root = dir.join("fs");
    DirBuilder::new().mode(0o755).create(&root)?;
    let mut meta = BufWriter::new(File::create(dir.join("meta"))?);

    let (blob, _) = layout.open_blob(&layer.digest)?;
    let compressed = BufReader::with_capacity(READ_BUFFER, HashingReader::new(blob));
    let tar = HashingReader::new(Decoder::sniff(compressed).context("cannot read the layer blob")?);
    let tar = unpack::unpack(tar, &root, &mut meta)?;
    let (diff_id, _, decoder) = tar.finish().context("cannot decompress the layer blob")?;
    let (blob_digest, blob_size, _) = decoder.finish()?;

    if blob_digest != layer.digest || blob_size != layer.size {
        bail!(
            "the blob is corrupt: it hashes to {blob_digest} ({blob_size} bytes, the manifest says {} bytes); \
             export the image again",
            layer.size
        );
    }
    if diff_id != layer.diff_id {
        bail!(
            "its uncompressed content hashes to {diff_id} but the image config says {}; the image is corrupt",
            layer.diff_id
        );
    }
    meta.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok(())
}

type Blob = BufReader<HashingReader<Box<dyn Read + Send>>>;

/// Decompression chosen by magic bytes (media types are not always
/// accurate); uncompressed is the fallback.
enum Decoder {
    Plain(Blob),
    Gzip(Box<flate2::bufread::MultiGzDecoder<Blob>>),
    Zstd(zstd::stream::read::Decoder<'static, Blob>),
}

impl Decoder {
    fn sniff(mut blob: Blob) -> io::Result<Decoder> {
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
    fn finish(self) -> io::Result<(Digest, u64, Box<dyn Read + Send>)> {
        let mut blob = match self {
            Decoder::Plain(blob) => blob,
            Decoder::Gzip(decoder) => decoder.into_inner(),
            Decoder::Zstd(decoder) => decoder.finish(),
        };
        io::copy(&mut blob, &mut io::sink())?;
        blob.into_inner().finish()
    }
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(blob) => blob.read(buf),
            Decoder::Gzip(decoder) => decoder.read(buf),
            Decoder::Zstd(decoder) => decoder.read(buf),
        }
    }
}
