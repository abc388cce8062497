//! Unpacking one layer tar into an empty directory, rootless and safely.
//!
//! Every path is resolved under the layer root with openat2
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`) and
//! every change is an *at() call relative to the parent directory's fd,
//! so no entry can write outside the layer: `..` components, symlinks in a
//! parent path and hard links to anything not already in this layer make
//! the whole layer fail. Symlink targets are stored as they are and never
//! followed here.
//!
//! OCI whiteouts become overlayfs whiteouts as the runtime mounts layers
//! with `userxattr`: `.wh.<name>` → a 0:0 character device `<name>`,
//! `.wh..wh..opq` → xattr `user.overlay.opaque=y` on the directory.
//!
//! Directories are made with their final mode when that leaves the owner
//! rwx (else 0700), and get their mtime, and the final mode where the
//! umask or that rule kept it from them, at the end, deepest first: so
//! read-only directories can still be filled and their mtimes survive.
//! Files lose setuid/setgid bits; the original mode and owner of every
//! entry go to the metadata file (see `meta`).
//!
//! Parents missing from the tar are made 0755 and recorded as implicit
//! directories; whether lower layers of an image have a symlink there is
//! checked once the image's layers are all in (see `implicit`).
//!
//! Small regular files are created, written and timestamped by a few
//! writer threads (file creation is most of the kernel's work); the
//! reader does everything else in tar order, including the metadata, and
//! waits for the writers before any entry that could touch a path they
//! have not finished (the same path, one above or below it, any hard link
//! or whiteout) and before the directories get their modes. Files are
//! created with their final mode; `fchmod` only when the umask took bits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{Context, anyhow, bail};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::fsx;
use super::meta::{self, EntryKind, MetaEntry};

const OPAQUE_XATTR: &str = "user.overlay.opaque";
const COPY_BUFFER: usize = 256 << 10;
/// Threads creating small files while the reader goes on with the tar:
/// creating a file costs far more kernel time than its data here.
const WRITERS: usize = 2;
/// Files up to this size are buffered and handed to a writer.
const SMALL_FILE: u64 = 256 << 10;
/// Files queued or being written at most, and their bytes (memory).
const QUEUE: usize = 64;
const QUEUE_BYTES: usize = 2 << 20;
/// Files queued before an idle writer is woken: waking one for each file
/// would cost a context switch per file.
const WAKE_AT: usize = 8;

/// Unpacks the tar stream `tar` into the empty directory `root`, writing
/// the metadata file to `meta`. Returns the stream, positioned after the
/// end-of-archive marker, so the caller can hash what is left, and the
/// bytes of the files (each hard link again) and symlink targets made:
/// the layer's size, without a walk over it afterwards.
///
/// Small files are created by `WRITERS` threads, all joined before this
/// returns; everything else, and the metadata, is done in tar order.
pub fn unpack<R: Read>(tar: R, root: &Path, meta: &mut dyn Write) -> anyhow::Result<(R, u64)> {
    let root = fsx::open_dir(root).with_context(|| format!("cannot open `{}`", root.display()))?;
    meta::write_header(meta)?;
    let pool = Pool::default();
    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS).map(|_| scope.spawn(|| pool.work())).collect();
        let closing = CloseOnDrop(&pool);
        let result = unpack_with(tar, root, meta, &pool);
        drop(closing);
        // Joined explicitly: the scope alone only waits for the closures.
        for writer in writers {
            let _ = writer.join();
        }
        result
    })
}

fn unpack_with<R: Read>(
    tar: R,
    root: OwnedFd,
    meta: &mut dyn Write,
    pool: &Pool,
) -> anyhow::Result<(R, u64)> {
    let setgid_root = rustix::fs::fstat(&root).map_or(true, |stat| stat.st_mode & 0o2000 != 0);
    let mut unpacker = Unpacker {
        pool,
        in_flight: HashSet::new(),
        in_flight_dirs: HashSet::new(),
        root,
        parent: None,
        dirs: HashMap::new(),
        meta,
        implicit_dirs: 0,
        bytes: 0,
        buf: vec![0; COPY_BUFFER],
        // Unknown: every file gets an fchmod, as if all bits were masked.
        umask: fsx::current_umask().unwrap_or(0o777),
        setgid_root,
    };
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().context("cannot read the layer tar")? {
        let mut entry = entry.context("the layer tar is corrupt")?;
        let shown = shown_path(Path::new(OsStr::from_bytes(&entry.path_bytes())));
        if let Err(err) = unpacker.entry(&mut entry) {
            // A writer's error names its own entry.
            return Err(if pool.failed() {
                err
            } else {
                err.context(format!("entry `{shown}`"))
            });
        }
    }
    unpacker.flush()?;
    unpacker.finish_dirs()?;
    meta::write_footer(unpacker.meta, unpacker.implicit_dirs)
        .context("cannot write the layer metadata")?;
    Ok((archive.into_inner(), unpacker.bytes))
}

struct Unpacker<'m> {
    pool: &'m Pool,
    /// Files handed to the pool since it was last flushed, and every
    /// directory above them: an entry touching one waits for the pool.
    in_flight: HashSet<PathBuf>,
    in_flight_dirs: HashSet<PathBuf>,
    root: OwnedFd,
    /// The parent directory of the previous entry; consecutive entries
    /// usually share one. An entry only changes its parent's children,
    /// never the parent itself, so this never goes stale.
    parent: Option<(PathBuf, Arc<OwnedFd>)>,
    /// Final mode and mtime per directory, applied at the end.
    dirs: HashMap<PathBuf, Dir>,
    meta: &'m mut dyn Write,
    /// How many parents missing from the tar were made (the meta footer).
    implicit_dirs: u64,
    /// What `unpack` returns as the layer's size.
    bytes: u64,
    buf: Vec<u8>,
    /// Bits the kernel strips from the mode files are created with.
    umask: u32,
    /// Directories made under a setgid root inherit the bit, which only
    /// a chmod removes.
    setgid_root: bool,
}

/// A directory of the tar, to finish at the end.
struct Dir {
    attrs: Attrs,
    /// Whether its mode is not the final one yet.
    chmod: bool,
}

#[derive(Clone, Copy)]
struct Attrs {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: Timespec,
}

impl Unpacker<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> anyhow::Result<()> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let rel = clean_path(&entry.path()?)?;
        let attrs = attrs(entry)?;
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
            if !kind.is_dir() {
                bail!("only a directory can stand for the layer root");
            }
            let root = Dir { attrs, chmod: true };
            self.dirs.insert(PathBuf::new(), root);
            return self.record(EntryKind::Dir, attrs, Path::new("."));
        };
        self.wait_if_in_flight(&rel, kind)?;
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let parent = self.parent(&parent_rel)?;
        let placed = if is_small_file(entry) && !name.as_bytes().starts_with(b".wh.") {
            self.queue_file(&parent, &name, &rel, attrs, entry)
        } else {
            self.place(parent.as_fd(), &parent_rel, &name, &rel, attrs, entry)
        };
        self.parent = Some((parent_rel, parent));
        placed
    }

    /// Waits for the writers when this entry could touch a file they
    /// have not made yet: the same path, one above or below it, or any
    /// hard link or whiteout (they look at other paths).
    fn wait_if_in_flight(&mut self, rel: &Path, kind: EntryType) -> anyhow::Result<()> {
        if self.in_flight.is_empty() {
            return Ok(());
        }
        let touches = kind == EntryType::Link
            || rel
                .file_name()
                .is_some_and(|name| name.as_bytes().starts_with(b".wh."))
            || self.in_flight.contains(rel)
            || self.in_flight_dirs.contains(rel)
            || rel
                .ancestors()
                .skip(1)
                .any(|up| self.in_flight.contains(up));
        if touches {
            self.flush()?;
        }
        Ok(())
    }

    /// Waits until the writers are done with everything queued.
    fn flush(&mut self) -> anyhow::Result<()> {
        self.in_flight.clear();
        self.in_flight_dirs.clear();
        self.pool.flush()
    }

    fn queue_file<R: Read>(
        &mut self,
        parent: &Arc<OwnedFd>,
        name: &OsStr,
        rel: &Path,
        attrs: Attrs,
        entry: &mut tar::Entry<R>,
    ) -> anyhow::Result<()> {
        let mut data = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
        entry.read_to_end(&mut data)?;
        self.bytes += data.len() as u64;
        let mode = attrs.mode & 0o777;
        self.pool.submit(Job {
            parent: Arc::clone(parent),
            name: name.to_os_string(),
            shown: rel.to_path_buf(),
            data,
            mode,
            chmod: mode & self.umask != 0,
            mtime: attrs.mtime,
        })?;
        for up in rel.ancestors().skip(1) {
            if !self.in_flight_dirs.insert(up.to_path_buf()) {
                break;
            }
        }
        self.in_flight.insert(rel.to_path_buf());
        self.record(EntryKind::File, attrs, rel)
    }

    fn place<R: Read>(
        &mut self,
        parent: BorrowedFd<'_>,
        parent_rel: &Path,
        name: &OsStr,
        rel: &Path,
        attrs: Attrs,
        entry: &mut tar::Entry<R>,
    ) -> anyhow::Result<()> {
        if let Some(hidden) = name.as_bytes().strip_prefix(b".wh.") {
            return self.whiteout(parent, parent_rel, OsStr::from_bytes(hidden), attrs);
        }
        let mut entry_type = entry.header().entry_type();
        // Old tars mark directories only by a trailing slash.
        if entry_type == EntryType::Regular && entry.path_bytes().ends_with(b"/") {
            entry_type = EntryType::Directory;
        }
        let kind = match entry_type {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(parent, name, entry, attrs)?;
                EntryKind::File
            }
            EntryType::Directory => {
                self.dir(parent, name, rel, attrs)?;
                EntryKind::Dir
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .context("symlink without a target")?;
                symlink(parent, name, OsStr::from_bytes(&target), attrs.mtime)?;
                self.bytes += target.len() as u64;
                EntryKind::Symlink
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .context("hard link without a target")?;
                self.hard_link(parent, name, rel, Path::new(OsStr::from_bytes(&target)))?;
                EntryKind::HardLink
            }
            // Device nodes cannot be made rootless; the runtime provides /dev.
            EntryType::Char => {
                let (major, minor) = device(entry.header());
                EntryKind::CharDevice(major, minor)
            }
            EntryType::Block => {
                let (major, minor) = device(entry.header());
                EntryKind::BlockDevice(major, minor)
            }
            EntryType::Fifo => EntryKind::Fifo,
            other => bail!("unsupported tar entry type {:?}", other.as_byte() as char),
        };
        self.record(kind, attrs, rel)
    }

    fn record(&mut self, kind: EntryKind, attrs: Attrs, rel: &Path) -> anyhow::Result<()> {
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let entry = MetaEntry {
            kind,
            mode: attrs.mode,
            uid: attrs.uid,
            gid: attrs.gid,
            path: rel.to_path_buf(),
        };
        meta::write_entry(self.meta, &entry).context("cannot write the layer metadata")
    }

    /// Opens the parent directory of an entry, creating missing ones 0755.
    fn parent(&mut self, rel: &Path) -> anyhow::Result<Arc<OwnedFd>> {
        if let Some((cached, fd)) = self.parent.take()
            && cached == rel
        {
            return Ok(fd);
        }
        match fsx::open_dir_beneath(self.root.as_fd(), rel) {
            Ok(fd) => Ok(Arc::new(fd)),
            Err(Errno::NOENT) => self.make_parents(rel).map(Arc::new),
            Err(err) => Err(explain(self.root.as_fd(), err, rel)),
        }
    }

    fn make_parents(&mut self, rel: &Path) -> anyhow::Result<OwnedFd> {
        let mut dir =
            fsx::open_dir_beneath(self.root.as_fd(), Path::new("")).map_err(io::Error::from)?;
        let mut so_far = PathBuf::new();
        for component in rel.components() {
            let name = component.as_os_str();
            so_far.push(name);
            match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(0o755)) {
                Ok(()) => {
                    let attrs = Attrs {
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        mtime: Timespec {
                            tv_sec: 0,
                            tv_nsec: 0,
                        },
                    };
                    self.record(EntryKind::ImplicitDir, attrs, &so_far)?;
                    self.implicit_dirs += 1;
                }
                Err(Errno::EXIST) => {}
                Err(err) => return Err(explain(self.root.as_fd(), err, &so_far)),
            }
            dir = fsx::open_dir_beneath(dir.as_fd(), Path::new(name))
                .map_err(|err| explain(self.root.as_fd(), err, &so_far))?;
        }
        Ok(dir)
    }

    fn file(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        data: &mut impl Read,
        attrs: Attrs,
    ) -> anyhow::Result<()> {
        // No setuid/setgid on the host: the store may be readable by others.
        let mode = attrs.mode & 0o777;
        let mut file = create_file(parent, name, mode)?;
        self.bytes += copy(data, &mut file, &mut self.buf)?;
        finish_file(&file, mode, mode & self.umask != 0, attrs.mtime)
    }

    fn dir(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        attrs: Attrs,
    ) -> anyhow::Result<()> {
        // Sticky stays (/tmp), setuid/setgid go (see `file`).
        let mode = attrs.mode & 0o1777;
        let chmod = match self.make_dir(parent, name, mode) {
            Ok(chmod) => chmod,
            Err(Errno::EXIST) => {
                let existing = fsx::stat_at(parent, name)?;
                if FileType::from_raw_mode(existing.st_mode) == FileType::Directory {
                    existing.st_mode & 0o7777 != mode
                } else {
                    fsx::remove_at(parent, name)?;
                    let chmod = self.make_dir(parent, name, mode)?;
                    // A directory replacing a whiteout of this layer must
                    // still hide the lower layers' directory.
                    if fsx::is_whiteout(&existing) {
                        set_opaque(fsx::open_dir_beneath(parent, Path::new(name))?.as_fd())?;
                        self.record(EntryKind::Opaque, attrs, rel)?;
                    }
                    chmod
                }
            }
            Err(err) => return Err(io::Error::from(err).into()),
        };
        self.dirs.insert(rel.to_path_buf(), Dir { attrs, chmod });
        Ok(())
    }

    /// Makes a directory with `mode`, or 0700 if `mode` would lock the
    /// owner out while it is filled; whether it needs a chmod at the end.
    fn make_dir(&self, parent: BorrowedFd<'_>, name: &OsStr, mode: u32) -> Result<bool, Errno> {
        let initial = if mode & 0o700 == 0o700 { mode } else { 0o700 };
        rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(initial))?;
        Ok(initial != mode || mode & self.umask != 0 || self.setgid_root)
    }

    fn hard_link(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
        target: &Path,
    ) -> anyhow::Result<()> {
        let target = clean_path(target).context("bad hard link target")?;
        let not_here = || {
            anyhow!(
                "hard link target `{}` is not in this layer",
                shown_path(&target)
            )
        };
        let Some(target_name) = target.file_name() else {
            bail!("hard link to the layer root");
        };
        let target_parent = target.parent().unwrap_or(Path::new(""));
        let dir = match fsx::open_dir_beneath(self.root.as_fd(), target_parent) {
            Ok(dir) => dir,
            Err(Errno::NOENT) => return Err(not_here()),
            Err(err) => {
                let why = explain(self.root.as_fd(), err, target_parent);
                return Err(why.context(format!("bad hard link target `{}`", shown_path(&target))));
            }
        };
        let found = match fsx::stat_at(dir.as_fd(), target_name) {
            Ok(stat) => stat,
            Err(Errno::NOENT) => return Err(not_here()),
            Err(err) => return Err(io::Error::from(err).into()),
        };
        let file_type = FileType::from_raw_mode(found.st_mode);
        if file_type == FileType::Directory || fsx::is_whiteout(&found) {
            return Err(not_here().context("hard links must point at files"));
        }
        if target == rel {
            return Ok(());
        }
        let link = || rustix::fs::linkat(&dir, target_name, parent, name, AtFlags::empty());
        match link() {
            Err(Errno::EXIST) => {
                fsx::remove_at(parent, name)?;
                link()?;
            }
            other => other?,
        }
        self.bytes += u64::try_from(found.st_size).unwrap_or(0);
        Ok(())
    }

    fn whiteout(
        &mut self,
        parent: BorrowedFd<'_>,
        parent_rel: &Path,
        hidden: &OsStr,
        attrs: Attrs,
    ) -> anyhow::Result<()> {
        if hidden == ".wh..opq" {
            set_opaque(parent)?;
            return self.record(EntryKind::Opaque, attrs, parent_rel);
        }
        if hidden.as_bytes().starts_with(b".wh.") {
            return Ok(()); // AUFS bookkeeping such as .wh..wh.plnk
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            bail!("malformed whiteout");
        }
        // A whiteout only hides lower layers: an entry this layer already
        // has stays, and a directory of this layer hides the lower one's
        // contents.
        match fsx::stat_at(parent, hidden) {
            Ok(stat) if FileType::from_raw_mode(stat.st_mode) == FileType::Directory => {
                set_opaque(fsx::open_dir_beneath(parent, Path::new(hidden))?.as_fd())?;
            }
            Ok(_) => {}
            Err(Errno::NOENT) => make_whiteout(parent, hidden)?,
            Err(err) => return Err(io::Error::from(err).into()),
        }
        self.record(EntryKind::Whiteout, attrs, &parent_rel.join(hidden))
    }

    /// Applies directory modes and mtimes, deepest first: a parent made
    /// read-only must not block its children, and fixing a child must not
    /// come after its parent's mtime was set.
    fn finish_dirs(&mut self) -> anyhow::Result<()> {
        self.parent = None;
        debug_assert!(self.in_flight.is_empty());
        let mut dirs: Vec<(PathBuf, Dir)> = std::mem::take(&mut self.dirs).into_iter().collect();
        dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        for (rel, Dir { attrs, chmod }) in dirs {
            let dir = match fsx::open_dir_beneath(self.root.as_fd(), &rel) {
                Ok(dir) => dir,
                // A later entry replaced it.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(err) => return Err(explain(self.root.as_fd(), err, &rel)),
            };
            if chmod {
                rustix::fs::fchmod(&dir, Mode::from_raw_mode(attrs.mode & 0o1777))?;
            }
            rustix::fs::futimens(&dir, &times(attrs.mtime))
                .with_context(|| format!("cannot set the mtime of `{}`", shown_path(&rel)))?;
        }
        Ok(())
    }
}

/// Creates `name` with its final mode (less the umask); the fd is
/// writable whatever the mode, as it made the file.
fn create_file(parent: BorrowedFd<'_>, name: &OsStr, mode: u32) -> anyhow::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let create = || rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(mode));
    let fd = match create() {
        Err(Errno::EXIST) => {
            fsx::remove_at(parent, name)?;
            create()?
        }
        other => other?,
    };
    Ok(File::from(fd))
}

/// `chmod` only when the umask took bits away (0666 under 022, say).
fn finish_file(file: &File, mode: u32, chmod: bool, mtime: Timespec) -> anyhow::Result<()> {
    if chmod {
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode))?;
    }
    rustix::fs::futimens(file, &times(mtime))?;
    Ok(())
}

fn is_small_file<R: Read>(entry: &tar::Entry<R>) -> bool {
    let kind = entry.header().entry_type();
    matches!(kind, EntryType::Regular | EntryType::Continuous)
        && !entry.path_bytes().ends_with(b"/")
        && entry.size() <= SMALL_FILE
}

/// A small file for a writer thread.
struct Job {
    parent: Arc<OwnedFd>,
    name: std::ffi::OsString,
    shown: PathBuf,
    data: Vec<u8>,
    mode: u32,
    chmod: bool,
    mtime: Timespec,
}

impl Job {
    fn run(&self) -> anyhow::Result<()> {
        let mut file = create_file(self.parent.as_fd(), &self.name, self.mode)?;
        file.write_all(&self.data)?;
        finish_file(&file, self.mode, self.chmod, self.mtime)
    }
}

/// The writer threads' queue. The first error fails the layer: the
/// reader sees it at its next submit or flush.
#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
    /// A job was queued or the pool closed.
    work: Condvar,
    /// A job finished.
    done: Condvar,
}

#[derive(Default)]
struct PoolState {
    queue: VecDeque<Job>,
    /// Queued or being written, and their bytes.
    pending: usize,
    bytes: usize,
    closed: bool,
    error: Option<anyhow::Error>,
    failed: bool,
    /// Who sleeps: the reader on `done` until `pending` and `bytes` are
    /// down to these, how many writers on `work` (waking no one saves a
    /// futex call per file).
    reader_waits: Option<(usize, usize)>,
    idle_writers: usize,
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, job: Job) -> anyhow::Result<()> {
        let size = job.data.len();
        let state = self.lock();
        // A full queue has to drain to half, not by one file: waking the
        // reader for each file would cost two context switches per file.
        let level = if state.pending >= QUEUE || state.bytes + size > QUEUE_BYTES {
            (QUEUE / 2, QUEUE_BYTES / 2)
        } else {
            (usize::MAX, usize::MAX)
        };
        let mut state = self.wait_until(state, level)?;
        state.pending += 1;
        state.bytes += size;
        state.queue.push_back(job);
        if state.idle_writers > 0 && state.queue.len() >= WAKE_AT {
            self.work.notify_one();
        }
        Ok(())
    }

    fn flush(&self) -> anyhow::Result<()> {
        self.wait_until(self.lock(), (0, 0)).map(drop)
    }

    /// The reader sleeps until at most `jobs` files of at most `bytes`
    /// are pending or a writer has failed; then the state, or the first
    /// writer's error.
    fn wait_until<'a>(
        &self,
        mut state: MutexGuard<'a, PoolState>,
        (jobs, bytes): (usize, usize),
    ) -> anyhow::Result<MutexGuard<'a, PoolState>> {
        while (state.pending > jobs || state.bytes > bytes) && !state.failed {
            if state.idle_writers > 0 {
                self.work.notify_all(); // fewer than `WAKE_AT` may be queued
            }
            state.reader_waits = Some((jobs, bytes));
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
            state.reader_waits = None;
        }
        if state.failed {
            return Err(state
                .error
                .take()
                .unwrap_or_else(|| anyhow!("a writer failed")));
        }
        Ok(state)
    }

    fn failed(&self) -> bool {
        self.lock().failed
    }

    /// Drops what is still queued and lets the writers end.
    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let dropped = std::mem::take(&mut state.queue);
        state.pending -= dropped.len();
        state.bytes -= dropped.iter().map(|job| job.data.len()).sum::<usize>();
        self.work.notify_all();
    }

    fn work(&self) {
        loop {
            let job = {
                let mut state = self.lock();
                loop {
                    if let Some(job) = state.queue.pop_front() {
                        break job;
                    }
                    if state.closed {
                        return;
                    }
                    state.idle_writers += 1;
                    state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
                    state.idle_writers -= 1;
                }
            };
            let result = job
                .run()
                .with_context(|| format!("entry `{}`", shown_path(&job.shown)));
            let size = job.data.len();
            drop(job);
            let mut state = self.lock();
            state.pending -= 1;
            state.bytes -= size;
            if let Err(err) = result
                && !state.failed
            {
                state.failed = true;
                state.error = Some(err);
            }
            if let Some((jobs, bytes)) = state.reader_waits
                && (state.failed || (state.pending <= jobs && state.bytes <= bytes))
            {
                self.done.notify_one();
            }
        }
    }
}

/// Ends the writers however the reader leaves (a panic included), so
/// the scope can join them.
struct CloseOnDrop<'a>(&'a Pool);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

fn symlink(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    target: &OsStr,
    mtime: Timespec,
) -> anyhow::Result<()> {
    let create = || rustix::fs::symlinkat(target, parent, name);
    match create() {
        Err(Errno::EXIST) => {
            fsx::remove_at(parent, name)?;
            create()?;
        }
        other => other?,
    }
    rustix::fs::utimensat(parent, name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn make_whiteout(parent: BorrowedFd<'_>, name: &OsStr) -> anyhow::Result<()> {
    rustix::fs::mknodat(parent, name, FileType::CharacterDevice, Mode::empty(), 0).map_err(|err| {
        anyhow!(io::Error::from(err)).context(
            "cannot create an overlay whiteout (a 0:0 character device); \
             unprivileged users can since Linux 5.8",
        )
    })
}

fn set_opaque(dir: BorrowedFd<'_>) -> anyhow::Result<()> {
    rustix::fs::fsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(|err| {
        anyhow!(io::Error::from(err)).context(format!(
            "cannot set {OPAQUE_XATTR} on a directory; the store's filesystem must support \
             user xattrs (ext4, xfs, btrfs, tmpfs): set DEN_DATA_DIR to a directory on one"
        ))
    })
}

/// The relative path an entry names: `/` and `.` components dropped as
/// tar tools do, `..` refused outright.
pub(crate) fn clean_path(path: &Path) -> anyhow::Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                bail!("its path contains `..`; refusing to write outside the layer")
            }
        }
    }
    Ok(clean)
}

/// Components kept at each end of a long path in a message.
const SHOWN_ENDS: usize = 3;
/// Characters kept of a long file name in a message, half at each end.
const SHOWN_NAME: usize = 64;

/// A path a layer named, for an error message: many components show as
/// the first and last few around an ellipsis (`a/b/c/…/x/y/z`), a long
/// name as its two ends, and control characters as `?`, so a hostile
/// tar can neither make a message of megabytes nor drive the terminal.
pub(crate) fn shown_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut parts: Vec<&str> = text.split('/').collect();
    if parts.len() > 2 * SHOWN_ENDS + 1 {
        parts.splice(SHOWN_ENDS..parts.len() - SHOWN_ENDS, ["…"]);
    }
    let parts: Vec<String> = parts.into_iter().map(shown_name).collect();
    parts.join("/")
}

fn shown_name(name: &str) -> String {
    let chars: Vec<char> = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if chars.len() <= SHOWN_NAME {
        return chars.into_iter().collect();
    }
    let (head, tail) = (
        &chars[..SHOWN_NAME / 2],
        &chars[chars.len() - SHOWN_NAME / 2..],
    );
    format!("{}…{}", String::from_iter(head), String::from_iter(tail))
}

/// Turns an openat2 failure on `rel` into a message naming the culprit.
fn explain(root: BorrowedFd<'_>, err: Errno, rel: &Path) -> anyhow::Error {
    if matches!(err, Errno::LOOP | Errno::NOTDIR) {
        // Earlier components are checked to be directories first, so this
        // walk follows no symlink either.
        let mut prefix = PathBuf::new();
        for component in rel.components() {
            prefix.push(component);
            let Ok(stat) = fsx::stat_at(root, prefix.as_os_str()) else {
                break;
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {}
                FileType::Symlink => {
                    return anyhow!(
                        "its path goes through the symlink `{}`; links are never followed while unpacking",
                        shown_path(&prefix)
                    );
                }
                _ => return anyhow!("`{}` is not a directory", shown_path(&prefix)),
            }
        }
    }
    match err {
        Errno::LOOP => {
            anyhow!("its path goes through a symlink; links are never followed while unpacking")
        }
        Errno::XDEV => anyhow!("its path leaves the layer"),
        other => {
            anyhow!(io::Error::from(other)).context(format!("cannot open `{}`", shown_path(rel)))
        }
    }
}

fn attrs<R: Read>(entry: &mut tar::Entry<R>) -> anyhow::Result<Attrs> {
    let header = entry.header();
    let (mode, uid, gid) = (header.mode()? & 0o7777, header.uid()?, header.gid()?);
    let seconds = i64::try_from(header.mtime()?).unwrap_or(i64::MAX);
    let mtime = pax_mtime(entry)?.unwrap_or(Timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    });
    Ok(Attrs {
        mode,
        uid,
        gid,
        mtime,
    })
}

/// PAX `mtime` ("1700000000.123456789") carries sub-second precision.
fn pax_mtime<R: Read>(entry: &mut tar::Entry<R>) -> anyhow::Result<Option<Timespec>> {
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(None);
    };
    for extension in extensions {
        let extension = extension?;
        if extension.key() == Ok("mtime") {
            return Ok(extension.value().ok().and_then(parse_pax_time));
        }
    }
    Ok(None)
}

fn parse_pax_time(text: &str) -> Option<Timespec> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let tv_sec: i64 = whole.parse().ok()?;
    let digits: String = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    let nanos: i64 = digits.parse().ok()?;
    let tv_nsec = if text.starts_with('-') { -nanos } else { nanos };
    // Normalise negative fractions (before 1970) to a positive nsec.
    Some(if tv_nsec < 0 {
        Timespec {
            tv_sec: tv_sec - 1,
            tv_nsec: tv_nsec + 1_000_000_000,
        }
    } else {
        Timespec { tv_sec, tv_nsec }
    })
}

/// Device numbers, only recorded: a malformed field reads as 0.
fn device(header: &tar::Header) -> (u32, u32) {
    let number = |n: io::Result<Option<u32>>| n.ok().flatten().unwrap_or(0);
    (number(header.device_major()), number(header.device_minor()))
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

/// Returns the bytes copied.
fn copy(from: &mut impl Read, to: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let mut copied = 0;
    loop {
        match from.read(buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => {
                to.write_all(&buf[..n])?;
                copied += n as u64;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}
