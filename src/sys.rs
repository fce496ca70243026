//! The kernel interface the executor needs, as one narrow trait, and its real
//! implementation. Everything beneath the persistent partition is resolved one
//! component at a time with O_NOFOLLOW: the booted system writes that partition,
//! so a planted symlink must never redirect a mkdir, a bind or a write.
#![allow(unsafe_code)]

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::mount::MsFlags;
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, fsync, Gid, Uid};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path};

/// The calls the executor makes. Tests use a recording fake; the init uses [`Real`].
pub trait Sys {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> io::Result<()>;
    /// Creates `path` if missing and sets exactly `mode`; an existing non-directory
    /// is an error.
    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates the directory `path` beneath `root` (and its parents, 0755) without
    /// following symlinks. Only directories it creates get `mode` and `owner`;
    /// returns whether it created the last one.
    fn dir_beneath(&mut self, root: &Path, path: &str, mode: u32, owner: Ids) -> io::Result<bool>;
    /// Bind mounts `path` beneath `root` onto `target`, never following symlinks.
    fn bind_beneath(&mut self, root: &Path, path: &str, target: &Path) -> io::Result<()>;
    /// Reads a regular file beneath `root` (at most `limit` bytes); None if absent.
    fn read_beneath(
        &mut self,
        root: &Path,
        path: &str,
        limit: usize,
    ) -> io::Result<Option<Vec<u8>>>;
    /// Replaces a file beneath `root` durably: temp file, fsync, rename, fsync dir.
    fn write_beneath(&mut self, root: &Path, path: &str, data: &[u8], mode: u32) -> io::Result<()>;
    /// Reads a file of the initramfs or the (read-only) system; None if absent.
    fn read_file(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>>;
    /// Bytes for a new machine-id; must not block boot waiting for entropy.
    fn random(&mut self) -> io::Result<[u8; 16]>;
}

/// Owner of a created directory; None keeps root.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ids {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The real kernel.
#[derive(Debug, Default)]
pub struct Real;

fn nix_err(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// Splits a relative path into its normal components; `..`, `.` and absolute
/// paths are refused so nothing climbs out of the root.
fn components(path: &str) -> io::Result<Vec<&str>> {
    let mut out = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => {
                out.push(s.to_str().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "path is not UTF-8")
                })?)
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{path:?} is not a plain relative path"),
                ))
            }
        }
    }
    Ok(out)
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn open_root(root: &Path) -> io::Result<OwnedFd> {
    openat(nix::fcntl::AT_FDCWD, root, DIR_FLAGS, Mode::empty()).map_err(nix_err)
}

/// Opens directory `name` in `dir`; ELOOP/ENOTDIR mean a symlink or a file stands
/// where a directory belongs.
fn open_dir_in(dir: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name:?} is not a directory (a symlink or a file is in its place)"),
        ),
        e => nix_err(e),
    })
}

/// Walks `dirs` beneath `root`, creating what is missing; the last component
/// gets `mode`/`gid` if created. Returns the last directory and whether it was created.
fn walk_create(root: &Path, dirs: &[&str], mode: u32, owner: Ids) -> io::Result<(OwnedFd, bool)> {
    let mut fd = open_root(root)?;
    let mut created = false;
    for (i, name) in dirs.iter().enumerate() {
        let last = i + 1 == dirs.len();
        let want = if last { mode } else { 0o755 };
        log::debug!(
            "mkdirat {}/{} {:o}",
            root.display(),
            dirs[..=i].join("/"),
            want
        );
        created = match mkdirat(&fd, *name, Mode::from_bits_truncate(want)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(nix_err(e)),
        };
        let next = open_dir_in(&fd, name)?;
        if created {
            // mkdir honours the umask and drops setgid/sticky on some kernels: set
            // the documented mode and owner explicitly.
            let ids = if last { owner } else { Ids::default() };
            fchown(
                &next,
                ids.uid.map(Uid::from_raw),
                ids.gid.map(Gid::from_raw),
            )
            .map_err(nix_err)?;
            fchmod(&next, Mode::from_bits_truncate(want)).map_err(nix_err)?;
        }
        fd = next;
    }
    Ok((fd, created))
}

/// Opens the existing directories of `dirs` beneath `root`, without creating.
fn walk(root: &Path, dirs: &[&str]) -> io::Result<OwnedFd> {
    let mut fd = open_root(root)?;
    for name in dirs {
        fd = open_dir_in(&fd, name)?;
    }
    Ok(fd)
}

impl Sys for Real {
    fn mount(
        &mut self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> io::Result<()> {
        log::debug!(
            "mount {source} on {} type {fstype} flags {flags:?} data {data:?}",
            target.display()
        );
        let fstype = (!fstype.is_empty()).then_some(fstype);
        let data = (!data.is_empty()).then_some(data);
        nix::mount::mount(Some(source), target, fstype, flags, data).map_err(nix_err)
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        log::debug!("mkdir {} {mode:o}", path.display());
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a directory (a symlink or a file is in its place)",
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(path)?,
            Err(e) => return Err(e),
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    fn dir_beneath(&mut self, root: &Path, path: &str, mode: u32, owner: Ids) -> io::Result<bool> {
        let dirs = components(path)?;
        walk_create(root, &dirs, mode, owner).map(|(_, created)| created)
    }

    fn bind_beneath(&mut self, root: &Path, path: &str, target: &Path) -> io::Result<()> {
        let parts = components(path)?;
        let (name, dirs) = parts
            .split_last()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?;
        let dir = walk(root, dirs)?;
        let fd = openat(
            &dir,
            *name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(nix_err)?;
        let kind = SFlag::from_bits_truncate(fstat(&fd).map_err(nix_err)?.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFDIR && kind != SFlag::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path:?} is neither a directory nor a regular file"),
            ));
        }
        // The fd pins the exact inode found without following links; the kernel's
        // magic link resolves to it, whatever the path now says.
        let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        log::debug!(
            "bind {}/{path} ({source}) on {}",
            root.display(),
            target.display()
        );
        nix::mount::mount(
            Some(source.as_str()),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(nix_err)
    }

    fn read_beneath(
        &mut self,
        root: &Path,
        path: &str,
        limit: usize,
    ) -> io::Result<Option<Vec<u8>>> {
        let parts = components(path)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Ok(None);
        };
        let dir = match walk(root, dirs) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let fd = match openat(
            &dir,
            *name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "is a symlink"))
            }
            Err(e) => return Err(nix_err(e)),
        };
        let kind = SFlag::from_bits_truncate(fstat(&fd).map_err(nix_err)?.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFREG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            ));
        }
        let mut data = Vec::new();
        std::fs::File::from(fd)
            .take(limit as u64)
            .read_to_end(&mut data)?;
        Ok(Some(data))
    }

    fn write_beneath(&mut self, root: &Path, path: &str, data: &[u8], mode: u32) -> io::Result<()> {
        let parts = components(path)?;
        let (name, dirs) = parts
            .split_last()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?;
        let dir = walk(root, dirs)?;
        let tmp = format!(".{name}.slotinit-tmp");
        log::debug!("write {}/{path} via {tmp}", root.display());
        let fd = openat(
            &dir,
            tmp.as_str(),
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_TRUNC
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(nix_err)?;
        fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(nix_err)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(data)?;
        file.sync_all()?;
        renameat(&dir, tmp.as_str(), &dir, *name).map_err(nix_err)?;
        fsync(dir.as_fd()).map_err(nix_err)
    }

    fn read_file(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn random(&mut self) -> io::Result<[u8; 16]> {
        let mut buf = [0u8; 16];
        // GRND_INSECURE (Linux 5.6+) never blocks: a machine-id needs uniqueness,
        // not secrecy, and PID 1 must not hang waiting for entropy.
        const GRND_INSECURE: libc::c_uint = 0x0004;
        // SAFETY: buf is a valid, writable 16-byte buffer for the whole call.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), GRND_INSECURE) };
        if n == buf.len() as isize {
            return Ok(buf);
        }
        // Older kernels reject the flag; /dev/urandom does not block either.
        std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_relative_paths_only() {
        assert_eq!(components("a/b/c").unwrap(), vec!["a", "b", "c"]);
        assert!(components("../a").is_err());
        assert!(components("/a").is_err());
        assert!(components("a/../b").is_err());
    }

    #[test]
    fn dirs_beneath_are_created_with_modes() {
        let root = tempfile::tempdir().unwrap();
        let mut sys = Real;
        assert!(sys
            .dir_beneath(root.path(), "x/y/tmp", 0o1777, Ids::default())
            .unwrap());
        assert!(!sys
            .dir_beneath(root.path(), "x/y/tmp", 0o1777, Ids::default())
            .unwrap());
        let meta = std::fs::metadata(root.path().join("x/y/tmp")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o1777);
        let parent = std::fs::metadata(root.path().join("x")).unwrap();
        assert_eq!(parent.permissions().mode() & 0o7777, 0o755);
    }

    #[test]
    fn planted_symlinks_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("home")).unwrap();
        let mut sys = Real;
        let err = sys
            .dir_beneath(root.path(), "home/user", 0o755, Ids::default())
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(!outside.path().join("user").exists());
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", root.path().join("etc/machine-id")).unwrap();
        assert!(sys.read_beneath(root.path(), "etc/machine-id", 64).is_err());
    }

    #[test]
    fn durable_write_then_read() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        let mut sys = Real;
        assert_eq!(sys.read_beneath(root.path(), "etc/id", 64).unwrap(), None);
        assert_eq!(sys.read_beneath(root.path(), "nodir/id", 64).unwrap(), None);
        sys.write_beneath(root.path(), "etc/id", b"abc\n", 0o444)
            .unwrap();
        assert_eq!(
            sys.read_beneath(root.path(), "etc/id", 64)
                .unwrap()
                .as_deref(),
            Some(&b"abc\n"[..])
        );
        let meta = std::fs::metadata(root.path().join("etc/id")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
        assert!(!root.path().join("etc/.id.slotinit-tmp").exists());
    }

    #[test]
    fn a_directory_is_not_a_file() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/machine-id")).unwrap();
        let err = Real
            .read_beneath(root.path(), "etc/machine-id", 64)
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn random_bytes_differ() {
        let mut sys = Real;
        assert_ne!(sys.random().unwrap(), sys.random().unwrap());
    }
}
