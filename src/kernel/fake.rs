//! A recording [`Sys`] for the host tests of every stage: each call becomes one
//! line in `calls`, in order; chosen calls fail with a chosen errno; reads are
//! served from a small in-memory file tree.

use crate::kernel::modules::{Done, Job, Loading, Scope};
use crate::kernel::sys::{Disk, DmLine, FileKind, Ids, Listener, Stat, Sys, WatchdogInfo};
use nix::mount::{MntFlags, MsFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// For a test that mounts for real: runs it again, alone, in a child process
/// with a private mount namespace (`unshare -m`), so that its mounts never land
/// on the host and no other test thread forks while it holds a file open (a
/// forked child keeps the descriptor until its exec, and a remount read-only
/// fails EBUSY meanwhile). `test` is `concat!(module_path!(), "::name")`.
/// True in the child: run the test's body. False in the parent, after the
/// child passed (it panics if the child failed).
pub(crate) fn in_own_mount_namespace(test: &str) -> bool {
    if std::env::var("SLOTINIT_TEST_MOUNT_NS").as_deref() == Ok("1") {
        return true;
    }
    // The harness names a test by its module path without the crate.
    let name = test.split_once("::").map_or(test, |(_, rest)| rest);
    let out = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--include-ignored", "--test-threads=1"])
        .env("SLOTINIT_TEST_MOUNT_NS", "1")
        .output()
        .expect("unshare (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{name} in its own mount namespace: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

#[derive(Default)]
pub(crate) struct Fake {
    /// Every call, one line each, in order.
    pub(crate) calls: Vec<String>,
    /// A call whose line starts with one of these fails with EIO.
    pub(crate) fail: Vec<String>,
    /// Like `fail`, but only the first such call fails.
    pub(crate) fail_once: Vec<String>,
    /// A call whose line starts with the prefix fails with that errno (looked
    /// at before `fail`).
    pub(crate) errno: Vec<(String, i32)>,
    /// Like `errno`, but each entry fails one call only (in order).
    pub(crate) errno_once: Vec<(String, i32)>,
    /// Regular files: their contents.
    pub(crate) files: BTreeMap<PathBuf, Vec<u8>>,
    /// Permission bits of files (0644 when not listed).
    pub(crate) modes: BTreeMap<PathBuf, u32>,
    /// Symlinks: their targets.
    pub(crate) links: BTreeMap<PathBuf, PathBuf>,
    /// Directories made or given; every parent of a file is one too.
    pub(crate) dirs: BTreeSet<PathBuf>,
    /// Paths whose filesystem statvfs reports read-only.
    pub(crate) read_only: BTreeSet<PathBuf>,
    /// What [`Sys::run`] returns for a program (exit 0 when not listed).
    pub(crate) exit: BTreeMap<String, Option<i32>>,
    /// What [`Sys::statfs_type`] answers (TMPFS_MAGIC when None).
    pub(crate) fs_type: Option<i64>,
    /// Device-mapper targets made and not removed, with their nodes.
    pub(crate) mapped: Vec<(String, PathBuf)>,
    /// What [`Sys::fibmap`] adds to the logical block (0: the block itself).
    pub(crate) fibmap_offset: u32,
    /// The files [`Sys::open`] handed out (their inode) and the path each
    /// stands for, newest last: a call on a File names its path, and a sync
    /// puts what was written into the tree.
    pub(crate) opened: Vec<(u64, PathBuf)>,
    /// The driver behind the fake's watchdog device.
    pub(crate) watchdog: FakeWatchdog,
    /// The Raspberry Pi firmware's OTP key 1, with which the fake mailbox
    /// answers HMAC-SHA256 (tag 0x00030092); None: the firmware refuses.
    pub(crate) otp_key: Option<Vec<u8>>,
}

/// A watchdog driver as the fake plays it: what WDIOC_GETSUPPORT and
/// WDIOC_GETBOOTSTATUS answer, the timeout it runs with (30 s, as
/// i6300esb's default) and the longest it accepts (a longer request is
/// clamped, as bcm2835_wdt's 15 s maximum).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FakeWatchdog {
    pub(crate) info: WatchdogInfo,
    pub(crate) boot_status: u32,
    pub(crate) timeout: u32,
    pub(crate) max_timeout: u32,
}

impl Default for FakeWatchdog {
    fn default() -> Self {
        FakeWatchdog {
            info: WatchdogInfo {
                // WDIOF_SETTIMEOUT | WDIOF_MAGICCLOSE | WDIOF_KEEPALIVEPING.
                options: 0x0080 | 0x0100 | 0x8000,
                identity: "fake".into(),
            },
            boot_status: 0,
            timeout: 30,
            max_timeout: 3600,
        }
    }
}

impl Fake {
    /// Records `line`; fails it when it was told to.
    pub(crate) fn record(&mut self, line: String) -> io::Result<()> {
        let once = self
            .errno_once
            .iter()
            .position(|(f, _)| line.starts_with(f.as_str()));
        let errno = once
            .map(|i| self.errno_once.remove(i).1)
            .or_else(|| {
                self.errno
                    .iter()
                    .find(|(f, _)| line.starts_with(f.as_str()))
                    .map(|(_, e)| *e)
            })
            .or_else(|| {
                self.fail
                    .iter()
                    .any(|f| line.starts_with(f.as_str()))
                    .then_some(libc::EIO)
            })
            .or_else(|| {
                let once = self
                    .fail_once
                    .iter()
                    .position(|f| line.starts_with(f.as_str()))?;
                self.fail_once.remove(once);
                Some(libc::EIO)
            });
        self.calls.push(line);
        match errno {
            Some(e) => Err(io::Error::from_raw_os_error(e)),
            None => Ok(()),
        }
    }

    /// An executable file (0755).
    pub(crate) fn add_exec(&mut self, path: &str) {
        self.files.insert(path.into(), Vec::new());
        self.modes.insert(path.into(), 0o755);
    }

    /// The calls whose line starts with `prefix`.
    pub(crate) fn calls_starting(&self, prefix: &str) -> Vec<&str> {
        self.calls
            .iter()
            .filter(|c| c.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }

    /// Index of the first call equal to `line` (for order checks).
    pub(crate) fn position(&self, line: &str) -> Option<usize> {
        self.calls.iter().position(|c| c == line)
    }

    /// The path a File from [`Sys::open`] stands for.
    fn path_of(&self, file: &File) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let ino = file.metadata().ok()?.ino();
        let (_, path) = self.opened.iter().rev().find(|(i, _)| *i == ino)?;
        Some(path.clone())
    }

    /// `{verb} {path}` for a call on a File from [`Sys::open`].
    fn on_file(&self, verb: &str, file: &File) -> String {
        match self.path_of(file) {
            Some(p) => format!("{verb} {}", p.display()),
            None => verb.to_string(),
        }
    }

    /// After a sync, the tree holds what was written to the File (a
    /// directory's stand-in holds nothing to keep).
    fn keep_written(&mut self, file: &File) -> io::Result<()> {
        use std::io::{Read, Seek};
        let Some(path) = self.path_of(file) else {
            return Ok(());
        };
        if !self.files.contains_key(&path) {
            return Ok(());
        }
        let mut data = Vec::new();
        let mut f = file.try_clone()?;
        f.rewind()?;
        f.read_to_end(&mut data)?;
        self.files.insert(path, data);
        Ok(())
    }

    /// `path` with the symlinks on it followed (absolute targets; relative
    /// ones from their directory), as far as the tree knows them.
    pub(crate) fn resolve(&self, path: &Path) -> PathBuf {
        let mut p = path.to_path_buf();
        for _ in 0..40 {
            let Some((link, target)) = self.links.iter().find(|(l, _)| p.starts_with(l)) else {
                break;
            };
            let rest = p
                .strip_prefix(link)
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let base = link.parent().unwrap_or(Path::new("/")).join(target);
            p = normalize(&base).join(rest);
        }
        p
    }

    fn has_dir(&self, path: &Path) -> bool {
        path == Path::new("/")
            || self.dirs.contains(path)
            || self
                .files
                .keys()
                .chain(self.links.keys())
                .chain(&self.dirs)
                .any(|f| f.starts_with(path) && f != path)
    }
}

fn flag_names(flags: MsFlags) -> String {
    let mut out = if flags.contains(MsFlags::MS_RDONLY) {
        "ro"
    } else {
        "rw"
    }
    .to_string();
    for (flag, name) in [
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
        (MsFlags::MS_MOVE, "move"),
        (MsFlags::MS_BIND, "bind"),
    ] {
        if flags.contains(flag) {
            out = format!("{out},{name}");
        }
    }
    out
}

/// What an OpenOptions asks beyond reading, as `write,create,direct,excl`;
/// the std type shows its fields only through Debug.
fn open_flags(options: &std::fs::OpenOptions) -> Vec<&'static str> {
    let text = format!("{options:?}");
    let set = |field: &str| text.contains(&format!(" {field}: true"));
    let custom = text
        .split("custom_flags: ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    let mut out = Vec::new();
    for (on, name) in [
        (set("write"), "write"),
        (set("truncate"), "truncate"),
        (set("create"), "create"),
        (set("create_new"), "create-new"),
        (custom & libc::O_DIRECT != 0, "direct"),
        (custom & libc::O_EXCL != 0, "excl"),
    ] {
        if on {
            out.push(name);
        }
    }
    out
}

/// `..` and `.` taken out of an absolute path.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

fn not_found() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

impl Sys for Fake {
    fn mount(&mut self, s: &str, t: &Path, f: &str, fl: MsFlags, d: &str) -> io::Result<()> {
        let flags = flag_names(fl);
        self.record(format!("mount {s} {} {f} {flags} {d}", t.display()))
    }
    fn mkdir(&mut self, p: &Path, m: u32) -> io::Result<()> {
        self.record(format!("mkdir {} {m:o}", p.display()))?;
        self.dirs.insert(p.to_path_buf());
        Ok(())
    }
    fn dir_beneath(&mut self, r: &Path, p: &str, m: u32, o: Ids) -> io::Result<bool> {
        let g = o.gid;
        self.record(format!("dir {}/{p} {m:o} {g:?}", r.display()))?;
        Ok(true)
    }
    fn bind_beneath(&mut self, r: &Path, p: &str, t: &Path) -> io::Result<()> {
        self.record(format!("bind {}/{p} {}", r.display(), t.display()))
    }
    fn read_beneath(&mut self, r: &Path, p: &str, _: usize) -> io::Result<Option<Vec<u8>>> {
        self.record(format!("read {}/{p}", r.display()))?;
        Ok(self.files.get(&r.join(p)).cloned())
    }
    fn write_beneath(&mut self, r: &Path, p: &str, d: &[u8], m: u32) -> io::Result<()> {
        self.record(format!("write {}/{p} {m:o}", r.display()))?;
        self.files.insert(r.join(p), d.to_vec());
        Ok(())
    }
    fn read_file(&mut self, p: &Path) -> io::Result<Option<Vec<u8>>> {
        self.record(format!("read-file {}", p.display()))?;
        Ok(self.files.get(&self.resolve(p)).cloned())
    }
    fn random(&mut self) -> io::Result<[u8; 16]> {
        self.record("random".into())?;
        Ok([0x11; 16])
    }

    fn mount_follow(
        &mut self,
        s: &str,
        t: &Path,
        f: Option<&str>,
        fl: MsFlags,
        d: Option<&str>,
    ) -> io::Result<()> {
        let flags = flag_names(fl);
        let (f, d) = (f.unwrap_or("-"), d.unwrap_or(""));
        self.record(format!("mount {s} {} {f} {flags} {d}", t.display()))
    }
    fn umount(&mut self, t: &Path, flags: MntFlags) -> io::Result<()> {
        let detach = if flags.contains(MntFlags::MNT_DETACH) {
            " detach"
        } else {
            ""
        };
        self.record(format!("umount {}{detach}", t.display()))
    }
    fn remount(&mut self, t: &Path, fl: MsFlags) -> io::Result<()> {
        let flags = flag_names(fl);
        self.record(format!("remount {} {flags}", t.display()))
    }
    fn is_read_only(&mut self, p: &Path) -> io::Result<bool> {
        self.record(format!("statvfs {}", p.display()))?;
        Ok(self.read_only.contains(p))
    }
    fn statfs_type(&mut self, p: &Path) -> io::Result<i64> {
        self.record(format!("statfs {}", p.display()))?;
        Ok(self.fs_type.unwrap_or(crate::kernel::sys::TMPFS_MAGIC))
    }
    fn reboot(&mut self) -> io::Error {
        match self.record("reboot".into()) {
            Err(e) => e,
            // The fake never reboots: the caller sees a failed reboot.
            Ok(()) => io::Error::from_raw_os_error(libc::EPERM),
        }
    }
    fn restart(&mut self, arg: &CStr) -> io::Error {
        match self.record(format!("restart {}", arg.to_string_lossy())) {
            Err(e) => e,
            Ok(()) => io::Error::from_raw_os_error(libc::EPERM),
        }
    }
    fn sleep(&mut self, d: Duration) {
        let _ = self.record(format!("sleep {}ms", d.as_millis()));
    }
    fn reset_signals(&mut self) -> io::Result<()> {
        self.record("reset-signals".into())
    }
    fn execv(&mut self, path: &CStr, argv: &[CString]) -> io::Error {
        let args: Vec<_> = argv.iter().map(|a| a.to_string_lossy()).collect();
        let line = format!("execv {} {}", path.to_string_lossy(), args.join(" "));
        match self.record(line) {
            Err(e) => e,
            Ok(()) => io::Error::from_raw_os_error(libc::ENOEXEC),
        }
    }
    fn chdir(&mut self, p: &Path) -> io::Result<()> {
        self.record(format!("chdir {}", p.display()))
    }
    fn chroot(&mut self, p: &Path) -> io::Result<()> {
        self.record(format!("chroot {}", p.display()))
    }
    fn cpu_times_us(&mut self) -> io::Result<(u64, u64)> {
        self.record("getrusage".into())?;
        Ok((1000, 2000))
    }
    fn run(&mut self, program: &str, args: &[&OsStr]) -> io::Result<Option<i32>> {
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        self.record(format!("run {program} {}", args.join(" ")))?;
        Ok(self.exit.get(program).copied().unwrap_or(Some(0)))
    }
    fn symlink(&mut self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(format!(
            "symlink {} -> {}",
            link.display(),
            target.display()
        ))?;
        self.links.insert(link.to_path_buf(), target.to_path_buf());
        Ok(())
    }
    fn create_dir_all(&mut self, p: &Path) -> io::Result<()> {
        self.record(format!("create-dir-all {}", p.display()))?;
        self.dirs.insert(p.to_path_buf());
        Ok(())
    }
    fn remove_file(&mut self, p: &Path) -> io::Result<()> {
        self.record(format!("remove-file {}", p.display()))?;
        let file = self.files.remove(p).is_some();
        let link = self.links.remove(p).is_some();
        if file || link {
            Ok(())
        } else {
            Err(not_found())
        }
    }
    fn remove_dir(&mut self, p: &Path) -> io::Result<()> {
        self.record(format!("remove-dir {}", p.display()))?;
        self.dirs.remove(p);
        Ok(())
    }
    fn write_file(&mut self, p: &Path, d: &[u8]) -> io::Result<()> {
        self.record(format!("write-file {}", p.display()))?;
        self.files.insert(p.to_path_buf(), d.to_vec());
        Ok(())
    }
    fn copy_file(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.record(format!("copy {} {}", from.display(), to.display()))?;
        let data = self.files.get(from).cloned().ok_or_else(not_found)?;
        self.files.insert(to.to_path_buf(), data);
        Ok(())
    }
    fn exists(&mut self, p: &Path) -> bool {
        let _ = self.record(format!("exists {}", p.display()));
        let p = self.resolve(p);
        self.files.contains_key(&p) || self.has_dir(&p)
    }
    fn is_dir(&mut self, p: &Path) -> bool {
        let _ = self.record(format!("is-dir {}", p.display()));
        let p = self.resolve(p);
        self.has_dir(&p)
    }
    fn lstat(&mut self, p: &Path) -> io::Result<Stat> {
        self.record(format!("lstat {}", p.display()))?;
        let kind = if self.links.contains_key(p) {
            FileKind::Symlink
        } else if self.files.contains_key(p) {
            FileKind::File
        } else if self.has_dir(p) {
            FileKind::Dir
        } else {
            return Err(not_found());
        };
        let mode = match kind {
            FileKind::File => self.modes.get(p).copied().unwrap_or(0o644),
            FileKind::Symlink => 0o777,
            _ => 0o755,
        };
        Ok(Stat { kind, mode, dev: 1 })
    }
    fn read_link(&mut self, p: &Path) -> io::Result<PathBuf> {
        self.record(format!("readlink {}", p.display()))?;
        self.links.get(p).cloned().ok_or_else(not_found)
    }
    fn read_dir(&mut self, p: &Path) -> io::Result<Vec<PathBuf>> {
        self.record(format!("read-dir {}", p.display()))?;
        if !self.has_dir(p) {
            return Err(not_found());
        }
        let children = self
            .files
            .keys()
            .chain(self.links.keys())
            .chain(&self.dirs)
            .filter_map(|f| f.strip_prefix(p).ok()?.components().next())
            .map(|c| p.join(c))
            .collect::<BTreeSet<_>>();
        Ok(children.into_iter().collect())
    }
    fn canonicalize(&mut self, p: &Path) -> io::Result<PathBuf> {
        self.record(format!("canonicalize {}", p.display()))?;
        Ok(self.resolve(p))
    }
    fn open_disk(&mut self, p: &Path) -> io::Result<Box<dyn Disk>> {
        self.record(format!("open-disk {}", p.display()))?;
        let data = self
            .files
            .get(&self.resolve(p))
            .cloned()
            .ok_or_else(not_found)?;
        Ok(Box::new(io::Cursor::new(data)))
    }
    fn open_console(&mut self) -> io::Result<()> {
        self.record("open /dev/console".into())
    }
    fn finit_module(&mut self, p: &Path, params: &CStr) -> io::Result<()> {
        self.record(format!(
            "finit_module {} {:?}",
            p.display(),
            params.to_string_lossy()
        ))
    }
    fn load_modules(&mut self, jobs: Vec<Job>, threads: Option<usize>) -> Loading {
        let threads = threads.map_or("auto".into(), |n| n.to_string());
        let _ = self.record(format!("load-modules {} threads {threads}", jobs.len()));
        Loading::inline(jobs, &mut |path, params| {
            self.finit_module(path, params)
                .map_err(|e| crate::kernel::sys::errno_of(&e))
        })
    }
    fn wait_modules(&mut self, loading: &mut Loading, scope: Scope, _: Duration) -> Vec<Done> {
        let _ = self.record(format!("wait-modules {scope}"));
        loading.wait(scope, Duration::ZERO)
    }
    fn uevent_listen(&mut self) -> io::Result<Listener> {
        self.record("uevent-listen".into())?;
        Ok(Listener::none())
    }
    fn uevent_wait(&mut self, _: &Listener, timeout: Duration) -> bool {
        let _ = self.record(format!("uevent-wait {}ms", timeout.as_millis()));
        // A little real time passes, so a caller's deadline comes.
        std::thread::sleep(timeout.min(Duration::from_millis(2)));
        false
    }
    fn dm_create(&mut self, name: &str, readonly: bool, table: &[DmLine]) -> io::Result<PathBuf> {
        let lines: Vec<String> = table
            .iter()
            .map(|l| format!("{} {} {} {}", l.start, l.length, l.target, l.params))
            .collect();
        let ro = if readonly { "ro" } else { "rw" };
        self.record(format!("dm-create {name} {ro} {}", lines.join("; ")))?;
        let node = PathBuf::from(format!("/dev/dm-{}", self.mapped.len()));
        self.mapped.push((name.to_string(), node.clone()));
        Ok(node)
    }
    fn dm_reload(&mut self, name: &str, readonly: bool, table: &[DmLine]) -> io::Result<()> {
        let lines: Vec<String> = table
            .iter()
            .map(|l| format!("{} {} {} {}", l.start, l.length, l.target, l.params))
            .collect();
        let ro = if readonly { "ro" } else { "rw" };
        self.record(format!("dm-reload {name} {ro} {}", lines.join("; ")))
    }
    fn dm_remove(&mut self, name: &str) -> io::Result<()> {
        self.record(format!("dm-remove {name}"))?;
        self.mapped.retain(|(n, _)| n != name);
        Ok(())
    }
    /// An anonymous temp file holding the tree's bytes for `path` (what is
    /// written to it goes into the tree at the next fsync or fdatasync); an
    /// empty one for a directory, and for a missing file that `options`
    /// create (the file is then in the tree, empty). The line names what
    /// `options` ask beyond reading: `open /x write,create`.
    fn open(&mut self, p: &Path, options: &std::fs::OpenOptions) -> io::Result<File> {
        use std::io::{Seek, Write};
        use std::os::unix::fs::MetadataExt;
        let flags = open_flags(options);
        let line = match flags.as_slice() {
            [] => format!("open {}", p.display()),
            f => format!("open {} {}", p.display(), f.join(",")),
        };
        self.record(line)?;
        let path = self.resolve(p);
        let data = match self.files.get(&path) {
            Some(_) if flags.contains(&"create-new") => {
                return Err(io::Error::from_raw_os_error(libc::EEXIST))
            }
            Some(_) if flags.contains(&"truncate") => Vec::new(),
            Some(data) => data.clone(),
            None if self.has_dir(&path) => Vec::new(),
            None if flags.contains(&"create") || flags.contains(&"create-new") => {
                self.files.insert(path.clone(), Vec::new());
                Vec::new()
            }
            None => return Err(not_found()),
        };
        let mut file = tempfile::tempfile()?;
        file.write_all(&data)?;
        file.rewind()?;
        self.opened.push((file.metadata()?.ino(), path));
        Ok(file)
    }
    fn flock_exclusive(&mut self, f: &File) -> io::Result<()> {
        let line = self.on_file("flock", f);
        self.record(line)
    }
    fn fibmap(&mut self, _: &File, logical: u32) -> io::Result<u32> {
        self.record(format!("fibmap {logical}"))?;
        Ok(logical + self.fibmap_offset)
    }
    fn figetbsz(&mut self, _: &File) -> io::Result<u32> {
        self.record("figetbsz".into())?;
        Ok(512)
    }
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        self.record(format!("rename {} {}", from.display(), to.display()))?;
        let data = self.files.remove(from).ok_or_else(not_found)?;
        self.files.insert(to.to_path_buf(), data);
        if let Some(mode) = self.modes.remove(from) {
            self.modes.insert(to.to_path_buf(), mode);
        }
        Ok(())
    }
    fn fsync(&mut self, f: &File) -> io::Result<()> {
        let line = self.on_file("fsync", f);
        self.record(line)?;
        self.keep_written(f)
    }
    fn fdatasync(&mut self, f: &File) -> io::Result<()> {
        let line = self.on_file("fdatasync", f);
        self.record(line)?;
        self.keep_written(f)
    }

    fn watchdog_open(&mut self, p: &Path) -> io::Result<File> {
        self.record(format!("watchdog-open {}", p.display()))?;
        tempfile::tempfile()
    }
    fn watchdog_support(&mut self, _: &File) -> io::Result<WatchdogInfo> {
        self.record("watchdog-getsupport".into())?;
        Ok(self.watchdog.info.clone())
    }
    fn watchdog_boot_status(&mut self, _: &File) -> io::Result<u32> {
        self.record("watchdog-getbootstatus".into())?;
        Ok(self.watchdog.boot_status)
    }
    fn watchdog_set_timeout(&mut self, _: &File, seconds: u32) -> io::Result<u32> {
        self.record(format!("watchdog-settimeout {seconds}"))?;
        // watchdog_dev.c: without WDIOF_SETTIMEOUT the ioctl is EOPNOTSUPP.
        if self.watchdog.info.options & 0x0080 == 0 {
            return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        self.watchdog.timeout = seconds.min(self.watchdog.max_timeout);
        Ok(self.watchdog.timeout)
    }
    fn watchdog_get_timeout(&mut self, _: &File) -> io::Result<u32> {
        self.record("watchdog-gettimeout".into())?;
        Ok(self.watchdog.timeout)
    }
    fn watchdog_keepalive(&mut self, _: &File, by_write: bool) -> io::Result<()> {
        let how = if by_write { "write" } else { "ioctl" };
        self.record(format!("watchdog-keepalive {how}"))
    }
    fn watchdog_run(
        &mut self,
        program: &str,
        args: &[&OsStr],
        _: &File,
        _: bool,
        _: Duration,
    ) -> io::Result<Option<i32>> {
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        self.record(format!("run-fed {program} {}", args.join(" ")))?;
        Ok(self.exit.get(program).copied().unwrap_or(Some(0)))
    }
    fn watchdog_close(&mut self, _: File, magic: bool) -> io::Result<()> {
        let magic = if magic { " magic" } else { "" };
        self.record(format!("watchdog-close{magic}"))
    }
    fn rpi_mailbox(&mut self, buf: &mut [u32]) -> io::Result<()> {
        self.record(format!(
            "rpi-mailbox {:#010x}",
            buf.get(2).copied().unwrap_or(0)
        ))?;
        fake_firmware(self.otp_key.as_deref(), buf);
        Ok(())
    }
}

/// The firmware's side of the property mailbox, as far as the Pi OTP key
/// provider uses it: HMAC-SHA256 with OTP key 1 (raspberrypi/utils
/// rpifwcrypto.c `struct firmware_hmac_msg`: request flags, key_id, length,
/// message; response status, length, hmac). Anything else: an error status.
fn fake_firmware(otp_key: Option<&[u8]>, buf: &mut [u32]) {
    use hmac::Mac;
    const DONE: u32 = 0x8000_0000;
    // Too short for the HMAC answer: no answer (the code word stays 0).
    if buf.len() < 15 {
        return;
    }
    buf[1] = DONE;
    let (tag, key_id, len) = (buf[2], buf[6], buf[7] as usize);
    let bytes: Vec<u8> = buf[8..].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let answer = match otp_key {
        Some(key) if tag == 0x0003_0092 && key_id == 1 && len <= bytes.len() => {
            hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
                .ok()
                .map(|mut m| {
                    m.update(&bytes[..len]);
                    m.finalize().into_bytes().to_vec()
                })
        }
        _ => None,
    };
    match answer {
        Some(mac) => {
            buf[4] = DONE | 40;
            buf[5] = 0;
            buf[6] = 32;
            for (w, chunk) in buf[7..15].iter_mut().zip(mac.chunks(4)) {
                *w = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            }
        }
        None => {
            buf[4] = DONE | 8;
            buf[5] = DONE;
            buf[6] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_order_and_fails_as_told() {
        let mut sys = Fake {
            errno: vec![("umount /a".into(), libc::EBUSY)],
            fail: vec!["symlink".into()],
            ..Fake::default()
        };
        sys.files.insert("/etc/x".into(), b"x".to_vec());
        assert_eq!(
            sys.read_file(Path::new("/etc/x")).unwrap().as_deref(),
            Some(&b"x"[..])
        );
        assert_eq!(sys.read_file(Path::new("/etc/y")).unwrap(), None);
        let e = sys
            .umount(Path::new("/a"), MntFlags::MNT_DETACH)
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        let e = sys.symlink(Path::new("t"), Path::new("/l")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
        assert!(sys.exists(Path::new("/etc")));
        let mut f = sys
            .open(Path::new("/etc/x"), std::fs::OpenOptions::new().read(true))
            .unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).unwrap();
        assert_eq!(text, "x");
        assert_eq!(
            sys.read_dir(Path::new("/")).unwrap(),
            [PathBuf::from("/etc")]
        );
        assert_eq!(
            sys.calls,
            [
                "read-file /etc/x",
                "read-file /etc/y",
                "umount /a detach",
                "symlink /l -> t",
                "exists /etc",
                "open /etc/x",
                "read-dir /",
            ]
        );
    }

    /// The lines name what the options ask (read from OpenOptions' Debug:
    /// this fails if its format changes); a created file is in the tree, and
    /// what is written reaches the tree at the sync.
    #[test]
    fn open_names_its_options_and_a_sync_keeps_what_was_written() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut sys = Fake::default();
        sys.dirs.insert("/boot".into());
        let mut f = sys
            .open(
                Path::new("/boot/new"),
                std::fs::OpenOptions::new().write(true).create(true),
            )
            .unwrap();
        f.write_all(b"data").unwrap();
        assert_eq!(sys.files.get(Path::new("/boot/new")), Some(&Vec::new()));
        sys.fsync(&f).unwrap();
        assert_eq!(
            sys.files.get(Path::new("/boot/new")).map(Vec::as_slice),
            Some(&b"data"[..])
        );
        let e = sys
            .open(
                Path::new("/boot/new"),
                std::fs::OpenOptions::new().write(true).create_new(true),
            )
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let dir = sys
            .open(Path::new("/boot"), std::fs::OpenOptions::new().read(true))
            .unwrap();
        sys.flock_exclusive(&dir).unwrap();
        sys.open(
            Path::new("/boot/new"),
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_DIRECT | libc::O_EXCL),
        )
        .unwrap();
        sys.rename(Path::new("/boot/new"), Path::new("/boot/old"))
            .unwrap();
        assert!(sys.files.contains_key(Path::new("/boot/old")));
        assert_eq!(
            sys.calls,
            [
                "open /boot/new write,create",
                "fsync /boot/new",
                "open /boot/new write,create-new",
                "open /boot",
                "flock /boot",
                "open /boot/new write,direct,excl",
                "rename /boot/new /boot/old",
            ]
        );
    }
}
