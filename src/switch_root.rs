//! switch_root: the only place that frees the initramfs and execs the system's init.

use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sys::statfs::{statfs, TMPFS_MAGIC};
use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The API filesystems that move into the new root.
pub const MOVED: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

#[derive(Debug, thiserror::Error)]
pub enum SwitchRootError {
    #[error("cannot enter {path}")]
    Chdir {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot move {path} onto /")]
    MoveRoot {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot chroot into {path}")]
    Chroot {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("init path {init:?} contains a NUL byte")]
    BadInit { init: String },
    #[error("cannot exec {init}")]
    Exec {
        init: String,
        #[source]
        source: nix::Error,
    },
}

/// Resolves `path` inside `root` as the new root will see it: absolute symlink
/// targets count from `root`. True if it ends at an executable regular file.
/// Checked before the initramfs is freed, while a fallback is still possible.
pub fn is_executable_in(root: &Path, path: &str) -> bool {
    let mut current = PathBuf::from(path);
    for _ in 0..40 {
        let host = root.join(current.strip_prefix("/").unwrap_or(&current));
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            return false;
        };
        if meta.file_type().is_symlink() {
            let Ok(target) = std::fs::read_link(&host) else {
                return false;
            };
            current = if target.is_absolute() {
                target
            } else {
                current.parent().unwrap_or(Path::new("/")).join(target)
            };
            continue;
        }
        return meta.is_file() && meta.permissions().mode() & 0o111 != 0;
    }
    false
}

/// Moves the API filesystems into `new_root`, frees the initramfs, makes
/// `new_root` the root and execs `init`. Returns only on failure.
pub fn switch_root(new_root: &Path, init: &str) -> Result<Infallible, SwitchRootError> {
    for fs in MOVED {
        let target = new_root.join(fs.trim_start_matches('/'));
        log::debug!("move {fs} to {}", target.display());
        let moved = target.is_dir()
            && nix::mount::mount(
                Some(fs),
                &target,
                None::<&str>,
                MsFlags::MS_MOVE,
                None::<&str>,
            )
            .is_ok();
        if !moved {
            // The system lacks the mount point: it will mount its own; do not leave
            // this one pinned in the freed initramfs.
            log::warn!(
                "{} is missing in the system; unmounting {fs}",
                target.display()
            );
            let _ = umount2(fs, MntFlags::MNT_DETACH);
        }
    }
    let chdir = |path: &Path| {
        nix::unistd::chdir(path).map_err(|source| SwitchRootError::Chdir {
            path: path.to_path_buf(),
            source,
        })
    };
    chdir(new_root)?;
    free_initramfs(new_root);
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).map_err(
        |source| SwitchRootError::MoveRoot {
            path: new_root.to_path_buf(),
            source,
        },
    )?;
    nix::unistd::chroot(".").map_err(|source| SwitchRootError::Chroot {
        path: new_root.to_path_buf(),
        source,
    })?;
    chdir(Path::new("/"))?;
    let path = CString::new(init).map_err(|_| SwitchRootError::BadInit { init: init.into() })?;
    log::debug!("execv {init}");
    nix::unistd::execv(&path, &[&path]).map_err(|source| SwitchRootError::Exec {
        init: init.into(),
        source,
    })
}

/// Deletes the initramfs contents (everything on the root's device except the
/// new root): its memory is not freed otherwise. Only when / really is a
/// ramfs/tmpfs: a mistake here on a disk root would be unrecoverable.
fn free_initramfs(new_root: &Path) {
    let is_ram = statfs("/").is_ok_and(|s| {
        // RAMFS_MAGIC is not exported by nix for every target.
        const RAMFS_MAGIC: u64 = 0x8584_58f6;
        let t = s.filesystem_type();
        t == TMPFS_MAGIC || t.0 as u64 == RAMFS_MAGIC
    });
    if !is_ram {
        log::warn!("/ is not an initramfs; leaving it as it is");
        return;
    }
    let Ok(root_dev) = std::fs::symlink_metadata("/").map(|m| m.dev()) else {
        return;
    };
    remove_tree(Path::new("/"), root_dev, new_root);
}

fn remove_tree(dir: &Path, dev: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == keep {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            remove_tree(&path, dev, keep);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn init_resolution_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("sbin")).unwrap();
        std::fs::create_dir_all(r.join("lib/systemd")).unwrap();
        std::fs::write(r.join("lib/systemd/systemd"), b"").unwrap();
        std::fs::set_permissions(
            r.join("lib/systemd/systemd"),
            PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        symlink("/lib/systemd/systemd", r.join("sbin/init")).unwrap();
        symlink("../lib/systemd/systemd", r.join("sbin/rel")).unwrap();
        symlink("/nowhere", r.join("sbin/dangling")).unwrap();
        symlink("loop", r.join("sbin/loop")).unwrap();
        std::fs::write(r.join("sbin/plain"), b"").unwrap();
        assert!(is_executable_in(r, "/sbin/init"));
        assert!(is_executable_in(r, "/sbin/rel"));
        assert!(is_executable_in(r, "/lib/systemd/systemd"));
        assert!(!is_executable_in(r, "/sbin/dangling"));
        assert!(!is_executable_in(r, "/sbin/loop"));
        assert!(!is_executable_in(r, "/sbin/plain"), "not executable");
        assert!(!is_executable_in(r, "/sbin"), "a directory");
        assert!(!is_executable_in(r, "/missing"));
    }
}
