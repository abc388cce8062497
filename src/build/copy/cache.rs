//! Stat signatures: the per-project digest cache `scan` reads and
//! updates, and the watched list `unchanged` compares.
//!
//! A signature is `(inode, size, mtime, ctime, mode)` of an `lstat`. A
//! file whose signature is unchanged has unchanged content, except when
//! it was written again within the timestamp granularity of the look that
//! took the signature (git's "racy clean" problem): a file whose mtime is
//! less than `RACY` before a scan is hashed but not cached, so the next
//! scan hashes it again.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rustix::fs::{Stat, Timespec};
use serde::{Deserialize, Serialize};

use crate::image::digest::to_hex;
use crate::image::fsx;

const VERSION: u32 = 1;
const RACY: Duration = Duration::from_secs(2);

/// What `lstat` says about a path, as far as changes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SignatureRow", into = "SignatureRow")]
pub(super) struct Signature {
    ino: u64,
    size: u64,
    mtime: i64,
    ctime: i64,
    mode: u32,
}

/// Compact on disk: `[ino, size, mtime ns, ctime ns, mode]`.
type SignatureRow = (u64, u64, i64, i64, u32);

impl Signature {
    pub(super) fn of(stat: &Stat) -> Signature {
        let mtime = Timestamp::mtime(stat);
        let ctime = Timestamp::ctime(stat);
        Signature {
            ino: stat.st_ino,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime: nanos(mtime),
            ctime: nanos(ctime),
            mode: stat.st_mode,
        }
    }

    /// Modified so recently that a later write could leave the same
    /// signature: an equal signature proves nothing yet.
    fn racy(&self, now: i64) -> bool {
        self.mtime > now - RACY.as_nanos() as i64
    }
}

impl From<SignatureRow> for Signature {
    fn from((ino, size, mtime, ctime, mode): SignatureRow) -> Signature {
        Signature {
            ino,
            size,
            mtime,
            ctime,
            mode,
        }
    }
}

impl From<Signature> for SignatureRow {
    fn from(s: Signature) -> SignatureRow {
        (s.ino, s.size, s.mtime, s.ctime, s.mode)
    }
}

fn nanos(time: Timespec) -> i64 {
    time.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(time.tv_nsec)
}

/// Timestamps out of a `Stat`, whose field types differ by architecture.
pub(super) struct Timestamp;

#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
impl Timestamp {
    pub(super) fn mtime(stat: &Stat) -> Timespec {
        Timespec {
            tv_sec: stat.st_mtime as i64,
            tv_nsec: stat.st_mtime_nsec as i64,
        }
    }

    fn ctime(stat: &Stat) -> Timespec {
        Timespec {
            tv_sec: stat.st_ctime as i64,
            tv_nsec: stat.st_ctime_nsec as i64,
        }
    }
}

/// File digests by project path and signature, kept between scans in
/// one JSON file per project.
#[derive(Debug, Serialize, Deserialize)]
pub struct StatCache {
    version: u32,
    /// Project-relative path → signature and sha256 (hex). Paths that are
    /// not UTF-8 are never cached.
    files: HashMap<String, (Signature, String)>,
}

impl Default for StatCache {
    fn default() -> StatCache {
        StatCache {
            version: VERSION,
            files: HashMap::new(),
        }
    }
}

impl StatCache {
    /// The cache saved at `path`; empty if there is none or it is
    /// unreadable (it only saves work).
    pub fn load(path: &Path) -> StatCache {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StatCache>(&bytes).ok())
            .filter(|cache| cache.version == VERSION)
            .unwrap_or_default()
    }

    /// Writes the cache to `path` (parents created) through a temporary
    /// file renamed into place, so readers never see half of it.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            anyhow::bail!("bad stat cache path `{}`", path.display());
        };
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        let mut temp_name = b".".to_vec();
        temp_name.extend_from_slice(name.as_bytes());
        temp_name.extend_from_slice(format!(".{}.tmp", std::process::id()).as_bytes());
        let temp = dir.join(std::ffi::OsStr::from_bytes(&temp_name));
        let written = File::create(&temp)
            .map_err(anyhow::Error::from)
            .and_then(|file| {
                let mut out = BufWriter::new(file);
                serde_json::to_writer(&mut out, self)?;
                out.flush()?;
                Ok(std::fs::rename(&temp, path)?)
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.with_context(|| format!("cannot write the stat cache `{}`", path.display()))
    }

    /// A scan of `from` (project-relative): what it does not see again
    /// under `from` is dropped when it finishes.
    pub(super) fn session(&mut self, from: &Path) -> Session<'_> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Session {
            cache: self,
            from: from.to_path_buf(),
            now,
            seen: HashMap::new(),
        }
    }
}

pub(super) struct Session<'c> {
    cache: &'c mut StatCache,
    from: PathBuf,
    now: i64,
    seen: HashMap<String, (Signature, String)>,
}

impl Session<'_> {
    pub(super) fn lookup(&mut self, path: &Path, signature: Signature) -> Option<[u8; 32]> {
        let key = path.to_str()?;
        let (cached, hex) = self.cache.files.get(key)?;
        if *cached != signature {
            return None;
        }
        let sha256 = from_hex(hex)?;
        self.seen.insert(key.to_string(), (signature, hex.clone()));
        Some(sha256)
    }

    pub(super) fn insert(&mut self, path: &Path, signature: Signature, sha256: [u8; 32]) {
        if let Some(key) = path.to_str()
            && !signature.racy(self.now)
        {
            self.seen
                .insert(key.to_string(), (signature, to_hex(&sha256)));
        }
    }

    /// Replaces what the cache held under `from` with what this scan saw.
    pub(super) fn finish(self) {
        let from = self.from;
        self.cache
            .files
            .retain(|path, _| !Path::new(path).starts_with(&from));
        self.cache.files.extend(self.seen);
    }
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    let mut out = [0; 32];
    if bytes.len() != 64 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// A copied path (relative to the project root) and its signature when
/// it was scanned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "WatchedRow", into = "WatchedRow")]
pub struct Watched {
    path: PathBuf,
    signature: Signature,
}

/// Compact on disk: `["src/main.rs", [ino, size, mtime, ctime, mode]]`;
/// a path that is not UTF-8 is written as an array of bytes.
type WatchedRow = (StoredPath, Signature);

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredPath {
    Text(String),
    Bytes(Vec<u8>),
}

impl Watched {
    pub(super) fn new(path: PathBuf, signature: Signature) -> Watched {
        let path = if path.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            path
        };
        Watched { path, signature }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl From<WatchedRow> for Watched {
    fn from((path, signature): WatchedRow) -> Watched {
        let path = match path {
            StoredPath::Text(text) => PathBuf::from(text),
            StoredPath::Bytes(bytes) => PathBuf::from(std::ffi::OsString::from_vec(bytes)),
        };
        Watched { path, signature }
    }
}

impl From<Watched> for WatchedRow {
    fn from(watched: Watched) -> WatchedRow {
        let path = match watched.path.into_os_string().into_string() {
            Ok(text) => StoredPath::Text(text),
            Err(raw) => StoredPath::Bytes(raw.into_vec()),
        };
        (path, watched.signature)
    }
}

/// Whether every watched path still has the signature it was scanned
/// with: one `lstat` each, nothing read or hashed. Any error (a path
/// gone, the project moved) is a change.
pub fn unchanged(project_root: &Path, watched: &[Watched]) -> bool {
    let Ok(root) = fsx::open_dir(project_root) else {
        return false;
    };
    watched.iter().all(|entry| {
        fsx::stat_at(root.as_fd(), entry.path.as_os_str())
            .is_ok_and(|stat| Signature::of(&stat) == entry.signature)
    })
}
