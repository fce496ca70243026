//! switch_root: the only place that frees the initramfs and execs the system's init.

use crate::kernel::sys::{errno_of, FileKind, Sys, RAMFS_MAGIC, TMPFS_MAGIC};
use nix::mount::{MntFlags, MsFlags};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::path::{Component, Path, PathBuf};

/// The API filesystems that move into the new root.
const MOVED: [&str; 4] = ["/dev", "/proc", "/sys", "/run"];

#[derive(Debug, thiserror::Error)]
pub(crate) enum SwitchRootError {
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
    #[error("init {init:?}: argument {arg:?} contains a NUL byte")]
    BadInit { init: String, arg: String },
    #[error("cannot exec {init}")]
    Exec {
        init: String,
        #[source]
        source: nix::Error,
    },
}

/// Symlinks one lookup follows before giving up, as the kernel's MAXSYMLINKS
/// (include/linux/namei.h).
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` inside `root` as the system will see it once `root` is `/`:
/// every component, each symlink's target (absolute ones from `root`, relative
/// ones from their directory), `..` stopping at `root`, at most 40 symlinks.
/// Returns the host path of what it ends at, or None if a component is missing,
/// a non-directory stands where a directory belongs, or there are too many links.
fn resolve_in<S: Sys + ?Sized>(sys: &mut S, root: &Path, path: &str) -> Option<PathBuf> {
    // The directories resolved so far, below root; the components still to walk.
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: VecDeque<OsString> = Path::new(path)
        .components()
        .map(|c| c.as_os_str().to_os_string())
        .collect();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        match Path::new(&name).components().next() {
            None | Some(Component::RootDir | Component::CurDir | Component::Prefix(_)) => {}
            Some(Component::ParentDir) => {
                done.pop();
            }
            Some(Component::Normal(_)) => {
                let host: PathBuf = std::iter::once(root.as_os_str())
                    .chain(done.iter().map(OsString::as_os_str))
                    .chain(std::iter::once(name.as_os_str()))
                    .collect();
                let meta = sys.lstat(&host).ok()?;
                if meta.kind == FileKind::Symlink {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return None;
                    }
                    let target = sys.read_link(&host).ok()?;
                    // An empty target is ENOENT to the kernel (namei.c).
                    if target.as_os_str().is_empty() {
                        return None;
                    }
                    if target.is_absolute() {
                        done.clear();
                    }
                    for c in target.components().rev() {
                        todo.push_front(c.as_os_str().to_os_string());
                    }
                } else if todo.is_empty() || meta.kind == FileKind::Dir {
                    done.push(name);
                } else {
                    return None;
                }
            }
        }
    }
    Some(
        std::iter::once(root.as_os_str())
            .chain(done.iter().map(OsString::as_os_str))
            .collect(),
    )
}

/// True if `path`, resolved inside `root` as the new root will see it, is an
/// executable regular file. Checked before the initramfs is freed, while a
/// fallback is still possible.
pub(crate) fn is_executable_in<S: Sys + ?Sized>(sys: &mut S, root: &Path, path: &str) -> bool {
    // What resolve_in ends at is no symlink: lstat is stat there.
    resolve_in(sys, root, path)
        .and_then(|host| sys.lstat(&host).ok())
        .is_some_and(|m| m.kind == FileKind::File && m.mode & 0o111 != 0)
}

/// The init's argv: its path as argv[0] (as the kernel passes it), then `args`.
fn init_argv(init: &str, args: &[String]) -> Result<Vec<CString>, SwitchRootError> {
    std::iter::once(init)
        .chain(args.iter().map(String::as_str))
        .map(|a| {
            CString::new(a).map_err(|_| SwitchRootError::BadInit {
                init: init.into(),
                arg: a.into(),
            })
        })
        .collect()
}

/// Moves the API filesystems into `new_root`, frees the initramfs, makes
/// `new_root` the root and execs `init` with `args` (argv[1..]), every signal at
/// its default and none blocked. Returns only on failure.
pub(crate) fn switch_root<S: Sys + ?Sized>(
    sys: &mut S,
    new_root: &Path,
    init: &str,
    args: &[String],
) -> Result<Infallible, SwitchRootError> {
    // Before anything is moved: a bad argument must not cost the initramfs.
    let argv = init_argv(init, args)?;
    move_api_filesystems(sys, new_root);
    let chdir = |sys: &mut S, path: &Path| {
        sys.chdir(path).map_err(|e| SwitchRootError::Chdir {
            path: path.to_path_buf(),
            source: errno_of(&e),
        })
    };
    chdir(sys, new_root)?;
    free_initramfs(sys, new_root);
    sys.mount_follow(".", Path::new("/"), None, MsFlags::MS_MOVE, None)
        .map_err(|e| SwitchRootError::MoveRoot {
            path: new_root.to_path_buf(),
            source: errno_of(&e),
        })?;
    sys.chroot(Path::new("."))
        .map_err(|e| SwitchRootError::Chroot {
            path: new_root.to_path_buf(),
            source: errno_of(&e),
        })?;
    chdir(sys, Path::new("/"))?;
    log::debug!("execv {init} {args:?}");
    // The Rust runtime ignores SIGPIPE and both dispositions and the mask survive
    // execve(2): the init must start as the kernel would have started it.
    if let Err(e) = sys.reset_signals() {
        log::warn!("cannot reset signals before exec: {e}");
    }
    let e = sys.execv(&argv[0], &argv);
    Err(SwitchRootError::Exec {
        init: init.into(),
        source: errno_of(&e),
    })
}

/// Moves /dev, /proc, /sys and /run to their places in `new_root`; one the
/// system has no directory for is unmounted instead.
fn move_api_filesystems<S: Sys + ?Sized>(sys: &mut S, new_root: &Path) {
    for fs in MOVED {
        let target = new_root.join(fs.trim_start_matches('/'));
        log::debug!("move {fs} to {}", target.display());
        let moved = sys.is_dir(&target)
            && sys
                .mount_follow(fs, &target, None, MsFlags::MS_MOVE, None)
                .is_ok();
        if !moved {
            // The system lacks the mount point: it will mount its own; do not leave
            // this one pinned in the freed initramfs.
            log::warn!(
                "{} is missing in the system; unmounting {fs}",
                target.display()
            );
            let _ = sys.umount(Path::new(fs), MntFlags::MNT_DETACH);
        }
    }
}

/// Deletes the initramfs contents (everything on the root's device except the
/// new root): its memory is not freed otherwise. Only when / really is a
/// ramfs/tmpfs: a mistake here on a disk root would be unrecoverable.
fn free_initramfs<S: Sys + ?Sized>(sys: &mut S, new_root: &Path) {
    let is_ram = sys
        .statfs_type(Path::new("/"))
        .is_ok_and(|t| t == TMPFS_MAGIC || t == RAMFS_MAGIC);
    if !is_ram {
        log::warn!("/ is not an initramfs; leaving it as it is");
        return;
    }
    let Ok(root_dev) = sys.lstat(Path::new("/")).map(|m| m.dev) else {
        return;
    };
    remove_tree(sys, Path::new("/"), root_dev, new_root);
}

fn remove_tree<S: Sys + ?Sized>(sys: &mut S, dir: &Path, dev: u64, keep: &Path) {
    let Ok(entries) = sys.read_dir(dir) else {
        return;
    };
    for path in entries {
        if path == keep {
            continue;
        }
        let Ok(meta) = sys.lstat(&path) else {
            continue;
        };
        if meta.dev != dev {
            continue;
        }
        if meta.kind == FileKind::Dir {
            remove_tree(sys, &path, dev, keep);
            let _ = sys.remove_dir(&path);
        } else {
            let _ = sys.remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::Fake;
    use crate::kernel::sys::Real;
    use std::os::unix::fs::symlink;
    use std::os::unix::fs::PermissionsExt;

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
        assert!(is_executable_in(&mut Real, r, "/sbin/init"));
        assert!(is_executable_in(&mut Real, r, "/sbin/rel"));
        assert!(is_executable_in(&mut Real, r, "/lib/systemd/systemd"));
        assert!(!is_executable_in(&mut Real, r, "/sbin/dangling"));
        assert!(!is_executable_in(&mut Real, r, "/sbin/loop"));
        assert!(
            !is_executable_in(&mut Real, r, "/sbin/plain"),
            "not executable"
        );
        assert!(!is_executable_in(&mut Real, r, "/sbin"), "a directory");
        assert!(!is_executable_in(&mut Real, r, "/missing"));
    }

    fn executable(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
        std::fs::set_permissions(path, PermissionsExt::from_mode(0o755)).unwrap();
    }

    /// Debian and Fedora: /sbin -> usr/sbin (relative) or /usr/sbin (absolute),
    /// /sbin/init -> /lib/systemd/systemd with /lib -> usr/lib. Each directory
    /// link is resolved inside the root, never in the initramfs.
    #[test]
    fn init_through_directory_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        executable(&r.join("usr/lib/systemd/systemd"));
        executable(&r.join("usr/sbin/real-init"));
        symlink("usr/lib", r.join("lib")).unwrap();
        symlink("/usr/sbin", r.join("sbin")).unwrap();
        symlink("/lib/systemd/systemd", r.join("usr/sbin/init")).unwrap();
        symlink("../../sbin/real-init", r.join("usr/lib/rel-init")).unwrap();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        symlink("/", r.join("bin/up")).unwrap();
        symlink("../../../../../../usr/sbin/init", r.join("bin/deep")).unwrap();
        symlink("/usr/sbin/missing", r.join("bin/dangling")).unwrap();
        symlink("/bin/ping", r.join("bin/pong")).unwrap();
        symlink("", r.join("bin/empty")).unwrap_or(());
        symlink("/bin/pong", r.join("bin/ping")).unwrap();
        std::fs::write(r.join("bin/file"), b"").unwrap();
        for ok in [
            "/sbin/init",
            "/sbin/real-init",
            "/lib/systemd/systemd",
            "/usr/lib/rel-init",
            "/bin/up/sbin/init",
            "/bin/up/bin/up/lib/../lib/systemd/systemd",
            "/bin/deep",
            "/../../sbin/init",
            "sbin/init",
        ] {
            assert!(is_executable_in(&mut Real, r, ok), "{ok}");
        }
        for bad in [
            "/bin/dangling",
            "/bin/ping",
            "/bin/empty/sbin/init",
            "/bin/file/x",
            "/sbin",
            "/usr/lib/systemd/missing",
        ] {
            assert!(!is_executable_in(&mut Real, r, bad), "{bad}");
        }
        assert_eq!(
            resolve_in(&mut Real, r, "/sbin/init"),
            Some(r.join("usr/lib/systemd/systemd"))
        );
        // An absolute link is never read against the host's (the initramfs's) /.
        let host_only = tempfile::tempdir().unwrap();
        executable(&host_only.path().join("init"));
        symlink(host_only.path(), r.join("bin/host")).unwrap();
        assert!(!is_executable_in(&mut Real, r, "/bin/host/init"));
    }

    #[test]
    fn forty_links_resolve_and_forty_one_do_not() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        executable(&r.join("init"));
        symlink("/init", r.join("l0")).unwrap();
        for i in 1..=40 {
            symlink(format!("l{}", i - 1), r.join(format!("l{i}"))).unwrap();
        }
        assert!(is_executable_in(&mut Real, r, "/l39"), "40 links");
        assert!(!is_executable_in(&mut Real, r, "/l40"), "41 links");
    }

    #[test]
    fn argv_is_the_init_then_its_arguments() {
        let argv = init_argv("/sbin/init", &["single".into(), "--foo".into()]).unwrap();
        assert_eq!(argv, [c"/sbin/init", c"single", c"--foo"]);
        assert_eq!(init_argv("/sbin/init", &[]).unwrap(), [c"/sbin/init"]);
        let err = init_argv("/sbin/init", &["a\0b".into()]).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
        assert!(init_argv("/sbin\0/init", &[]).is_err());
    }

    fn initramfs() -> crate::kernel::fake::Fake {
        let mut sys = crate::kernel::fake::Fake::default();
        for d in ["/sysroot/dev", "/sysroot/proc", "/sysroot/sys"] {
            sys.dirs.insert(d.into());
        }
        sys.files.insert("/init".into(), b"elf".to_vec());
        sys.files.insert("/etc/slotinit.toml".into(), b"".to_vec());
        sys
    }

    #[test]
    fn moves_frees_the_initramfs_then_execs_in_order() {
        let mut sys = initramfs();
        let Err(e) = switch_root(
            &mut sys,
            Path::new("/sysroot"),
            "/sbin/init",
            &["single".into()],
        );
        assert!(matches!(e, SwitchRootError::Exec { .. }), "{e}");
        let calls: Vec<&str> = sys
            .calls
            .iter()
            .map(String::as_str)
            .filter(|c| !c.starts_with("lstat") && !c.starts_with("read-dir"))
            .collect();
        assert_eq!(
            calls,
            [
                "is-dir /sysroot/dev",
                "mount /dev /sysroot/dev - rw,move ",
                "is-dir /sysroot/proc",
                "mount /proc /sysroot/proc - rw,move ",
                "is-dir /sysroot/sys",
                "mount /sys /sysroot/sys - rw,move ",
                // The system has no /run: ours is not left pinned.
                "is-dir /sysroot/run",
                "umount /run detach",
                "chdir /sysroot",
                "statfs /",
                "remove-file /etc/slotinit.toml",
                "remove-dir /etc",
                "remove-file /init",
                "mount . / - rw,move ",
                "chroot .",
                "chdir /",
                "reset-signals",
                "execv /sbin/init /sbin/init single",
            ]
        );
        assert!(sys.files.is_empty(), "the initramfs is freed");
        assert!(
            sys.dirs.contains(Path::new("/sysroot/dev")),
            "the new root is kept"
        );
    }

    #[test]
    fn a_disk_root_is_never_emptied_and_a_bad_argument_moves_nothing() {
        let mut sys = initramfs();
        sys.fs_type = Some(0xef53);
        let _ = switch_root(&mut sys, Path::new("/sysroot"), "/sbin/init", &[]);
        assert!(sys.calls_starting("remove").is_empty(), "{:?}", sys.calls);
        assert_eq!(sys.files.len(), 2);
        let mut sys = initramfs();
        let Err(e) = switch_root(
            &mut sys,
            Path::new("/sysroot"),
            "/sbin/init",
            &["a\0b".into()],
        );
        assert!(matches!(e, SwitchRootError::BadInit { .. }));
        assert!(sys.calls.is_empty());
        // A failed chroot stops before the exec.
        let mut sys = Fake {
            fail: vec!["chroot".into()],
            ..initramfs()
        };
        let Err(e) = switch_root(&mut sys, Path::new("/sysroot"), "/sbin/init", &[]);
        assert_eq!(e.to_string(), "cannot chroot into /sysroot");
        assert!(sys.calls_starting("execv").is_empty());
    }
}
