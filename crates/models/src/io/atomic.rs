//! Safe file replacement: the one way tessera writes a file the user named (`--save`, `--out`,
//! `--output`, the peak cache), so that an interrupted, failed or concurrent save never destroys
//! or half-writes what was there, and never replaces something that is not a file.
//!
//! A write goes through these steps (the classic write-to-temporary-then-`rename(2)` pattern,
//! as in `atomicwrites` and SQLite's journal; POSIX makes a same-directory rename atomic):
//!
//! 1. **Resolve the target.** Symbolic links are followed (up to [`MAX_LINKS`]) so the write
//!    lands in the file the link points to and the link itself is kept; a dangling link creates
//!    its destination. The resolved target must be a regular file or not exist: a directory, a
//!    device node, a FIFO or a socket is refused, never replaced.
//! 2. **Sweep stale temporaries.** Temporaries of ours for the same target left by a process
//!    that no longer runs (killed mid-save) are removed, with a message on stderr.
//! 3. **Write a temporary** in the target's directory (so the rename cannot cross file
//!    systems), named `.<file name>.tessera-tmp-<pid>-<n>`, created exclusively, with the
//!    replaced file's permissions; flush and `fsync` it.
//! 4. **Rename** it over the target, then `fsync` the directory so the new name is durable.
//!
//! The temporary is removed on every error path, including a panic in the caller's writer
//! (a drop guard). [`check_writable`] runs steps 1 and 3 with an empty probe, so a long job
//! can find out before it starts that its save would fail.

use super::FileError;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many symbolic links a target may go through (Linux's `MAXSYMLINKS`).
pub const MAX_LINKS: usize = 40;

/// The marker in every temporary name, between the target's name and `<pid>-<n>`.
pub const TMP_MARKER: &str = ".tessera-tmp-";

/// Where a write to `path` lands: `path` with every symbolic link followed, and what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The file that will be replaced or created (never a symbolic link).
    pub path: PathBuf,
    /// Whether a regular file is there now.
    pub exists: bool,
}

/// Follows the symbolic links of `path` and checks that what it names is a regular file or
/// nothing, in an existing directory.
pub fn resolve(path: &Path) -> Result<Target, FileError> {
    if path.as_os_str().is_empty() {
        return Err(FileError::new(path, "empty file name"));
    }
    let mut current = path.to_path_buf();
    for _ in 0..=MAX_LINKS {
        let meta = match std::fs::symlink_metadata(&current) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                check_parent(path, &current)?;
                return Ok(Target {
                    path: current,
                    exists: false,
                });
            }
            Err(e) => return Err(FileError::new(path, format!("cannot inspect: {e}"))),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let link = std::fs::read_link(&current)
                .map_err(|e| FileError::new(path, format!("cannot read the link: {e}")))?;
            current = match current.parent() {
                Some(dir) if link.is_relative() => dir.join(link),
                _ => link,
            };
            continue;
        }
        if kind.is_file() {
            return Ok(Target {
                path: current,
                exists: true,
            });
        }
        let what = describe(&kind);
        let via = if current != path {
            format!(" (the link points to {})", current.display())
        } else {
            String::new()
        };
        return Err(FileError::new(
            path,
            format!("is {what}{via}, not a regular file; refusing to replace it"),
        ));
    }
    Err(FileError::new(
        path,
        format!("more than {MAX_LINKS} symbolic links (a loop?)"),
    ))
}

fn describe(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_char_device() {
            return "a character device";
        }
        if kind.is_block_device() {
            return "a block device";
        }
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// The directory a new file `target` would be created in must exist and be a directory.
fn check_parent(path: &Path, target: &Path) -> Result<(), FileError> {
    let dir = parent_dir(target);
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(FileError::new(
            path,
            format!("{} is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FileError::new(
            path,
            format!("the directory {} does not exist", dir.display()),
        )),
        Err(e) => Err(FileError::new(
            path,
            format!("cannot inspect the directory {}: {e}", dir.display()),
        )),
    }
}

/// The directory of `p` (`.` for a bare file name).
fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The prefix of every temporary name for `target` (`.<name>.tessera-tmp-`).
fn tmp_prefix(target: &Path) -> Option<OsString> {
    let mut s = OsString::from(".");
    s.push(target.file_name()?);
    s.push(TMP_MARKER);
    Some(s)
}

/// Whether process `pid` still runs. Without `/proc`, every process counts as running, so
/// nothing is swept that might still be written.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    proc.join(pid.to_string()).exists()
}

/// Removes temporaries of ours for `target` whose writing process no longer runs; returns
/// the paths removed.
pub fn sweep_stale(target: &Path) -> Vec<PathBuf> {
    let Some(prefix) = tmp_prefix(target) else {
        return Vec::new();
    };
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir(parent_dir(target)) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let regular = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if regular && !process_alive(pid) && std::fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// A temporary being written; removed when dropped unless renamed into place.
struct Temporary {
    path: PathBuf,
    done: bool,
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates a fresh temporary beside `target` (exclusively: never an existing file).
fn create_temporary(path: &Path, target: &Target) -> Result<(Temporary, File), FileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = tmp_prefix(&target.path).ok_or_else(|| FileError::new(path, "not a file path"))?;
    let dir = parent_dir(&target.path);
    loop {
        let mut name = prefix.clone();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        name.push(format!("{}-{n}", std::process::id()));
        let tmp = dir.join(name);
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        match opts.open(&tmp) {
            Ok(file) => {
                let guard = Temporary {
                    path: tmp,
                    done: false,
                };
                if target.exists {
                    // Keep the replaced file's permissions (a private checkpoint stays private).
                    if let Ok(m) = std::fs::metadata(&target.path) {
                        let _ = file.set_permissions(m.permissions());
                    }
                }
                return Ok((guard, file));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(FileError::new(
                    path,
                    format!("cannot create a temporary file in {}: {e}", dir.display()),
                ))
            }
        }
    }
}

/// Checks, without changing anything, that [`write_atomically`] to `path` can succeed as far as
/// the file system goes: the target resolves to a regular file or nothing, and a temporary can
/// be created (and is removed again) in its directory.
pub fn check_writable(path: &Path) -> Result<(), FileError> {
    let target = resolve(path)?;
    let (guard, file) = create_temporary(path, &target)?;
    drop(file);
    drop(guard);
    Ok(())
}

/// Writes a file through `body` as the module docs describe: on success `path` (or the file
/// its links point to) holds exactly what `body` wrote; on any error it is untouched and no
/// temporary is left behind. Stale temporaries of the target are reported on stderr.
pub fn write_atomically(
    path: impl AsRef<Path>,
    body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), FileError> {
    let path = path.as_ref();
    let target = resolve(path)?;
    for stale in sweep_stale(&target.path) {
        eprintln!(
            "tessera: removed {}, a temporary file left by an interrupted save",
            stale.display()
        );
    }
    let (mut guard, file) = create_temporary(path, &target)?;
    let write = |file: File| -> std::io::Result<()> {
        let mut w = BufWriter::with_capacity(1 << 16, file);
        body(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    };
    write(file).map_err(|e| FileError::new(path, format!("cannot write: {e}")))?;
    std::fs::rename(&guard.path, &target.path).map_err(|e| {
        FileError::new(
            path,
            format!("cannot move the finished temporary into place: {e}"),
        )
    })?;
    guard.done = true;
    // Make the rename itself durable (a directory fsync; not available on every platform).
    if let Ok(dir) = File::open(parent_dir(&target.path)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// [`write_atomically`] of a byte string.
pub fn write_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), FileError> {
    write_atomically(path, |w| w.write_all(bytes))
}
