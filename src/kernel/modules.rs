//! Kernel modules. The initramfs builder (`initramfs/build`) lists them in
//! `modules.load`, each with the modules it must follow (its dependencies and
//! pre-softdeps, resolved from the kernel's own metadata) and whether it is
//! an early one (a disk or watchdog driver, or a prerequisite of one). The init
//! loads them with finit_module(2) from several threads as that order allows
//! (`Sys::load_modules`), the early ones first, with the options the cmdline
//! gives each (`usb-storage.quirks=...`), as modprobe would; it waits for the
//! early ones before it waits for the disk, and for the rest before it mounts.
//!
//! The list, one module per line (`#` comments):
//!
//! ```text
//! # slotinit modules.load v2
//! /lib/modules/V/kernel/drivers/block/virtio_blk.ko early after=virtio_pci
//! /lib/modules/V/kernel/arch/arm64/crypto/aes-neon-blk.ko optional
//! ```
//!
//! Without the `v2` header (a list written by hand, or by an older builder)
//! every line follows the one before it: one module at a time, in order.

use crate::kernel::cmdline::{module_name, ModuleOption};
use nix::errno::Errno;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The first line of a list whose `after=` fields say the order.
const HEADER_V2: &str = "# slotinit modules.load v2";

/// One module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) path: PathBuf,
    /// Its options from the cmdline, space separated ("" for none).
    pub(crate) params: String,
    /// A disk or watchdog driver, or a prerequisite of one.
    pub(crate) early: bool,
    /// One of several implementations (a CPU may lack what it needs): a
    /// failure is logged, not an error.
    pub(crate) optional: bool,
    /// The jobs (indexes, all earlier in the list) it must follow.
    pub(crate) after: Vec<usize>,
}

/// Which jobs a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Early,
    All,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Early => "early",
            Scope::All => "all",
        })
    }
}

/// The jobs of a list: `text` read for the modules' `options` (from the
/// cmdline). An `after=` naming a module not earlier in the list is ignored
/// (it is built in, or the list is out of order): the order can never wait
/// on itself.
pub(crate) fn plan(text: &str, options: &[ModuleOption]) -> Vec<Job> {
    let ordered = text.lines().next().map(str::trim) == Some(HEADER_V2);
    let mut names: Vec<Option<String>> = Vec::new();
    let mut jobs: Vec<Job> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(path) = fields.next() else { continue };
        let path = PathBuf::from(path);
        let name = name_of(&path);
        let mut job = Job {
            params: name
                .as_deref()
                .map_or_else(String::new, |m| params_for(m, options)),
            path,
            early: false,
            optional: false,
            after: Vec::new(),
        };
        for field in fields {
            match field {
                "early" => job.early = true,
                "optional" => job.optional = true,
                _ => {
                    if let Some(list) = field.strip_prefix("after=") {
                        for dep in list.split(',').map(module_name) {
                            let found = names.iter().position(|n| n.as_deref() == Some(&dep));
                            job.after.extend(found.filter(|i| !job.after.contains(i)));
                        }
                    } else {
                        log::warn!("modules.load: unknown field {field:?} on {line:?}");
                    }
                }
            }
        }
        if !ordered {
            job.after = jobs.len().checked_sub(1).into_iter().collect();
        }
        names.push(name);
        jobs.push(job);
    }
    jobs
}

/// The module a file holds, as the kernel names it: the file name without
/// `.ko` (and a compression suffix), `-` read as `_` (Kbuild's KBUILD_MODNAME).
fn name_of(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    (!stem.is_empty()).then(|| module_name(stem))
}

/// The parameter string finit_module gets for `module`: its cmdline options in
/// cmdline order, space separated, as modprobe (kmod's libkmod-config.c
/// `kmod_config_parse_kcmdline`) passes them.
fn params_for(module: &str, options: &[ModuleOption]) -> String {
    let module = module_name(module);
    options
        .iter()
        .filter(|o| o.module == module)
        .map(ModuleOption::render)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where each job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
}

/// Which job runs next: the first in list order (the early ones come first)
/// whose prerequisites are done. Pure, so that the threads' order is tested
/// without threads.
#[derive(Debug)]
pub(crate) struct Scheduler {
    after: Vec<Vec<usize>>,
    early: Vec<bool>,
    state: Vec<State>,
    /// Only early jobs start until they are done (or the wait for them gave
    /// up: [`Scheduler::release`]).
    early_first: bool,
}

impl Scheduler {
    pub(crate) fn new(jobs: &[Job]) -> Self {
        Scheduler {
            after: jobs.iter().map(|j| j.after.clone()).collect(),
            early: jobs.iter().map(|j| j.early).collect(),
            state: vec![State::Waiting; jobs.len()],
            early_first: true,
        }
    }

    /// The rest may start even though an early job is not done (its wait
    /// timed out: a driver whose init hangs must not keep the filesystems out).
    pub(crate) fn release(&mut self) {
        self.early_first = false;
    }

    /// Starts the next job that may run, if any. While an early job is not
    /// done, only early jobs start: the disk's driver is not slowed by the
    /// rest, which loads while the disk is waited for.
    pub(crate) fn next(&mut self) -> Option<usize> {
        let early_only = self.early_first && !self.done(Scope::Early);
        let i = (0..self.state.len()).find(|&i| {
            self.state[i] == State::Waiting
                && (self.early[i] || !early_only)
                && self.after[i].iter().all(|&d| self.state[d] == State::Done)
        })?;
        self.state[i] = State::Running;
        Some(i)
    }

    pub(crate) fn finish(&mut self, i: usize) {
        self.state[i] = State::Done;
    }

    /// Every job of `scope` is done.
    pub(crate) fn done(&self, scope: Scope) -> bool {
        self.state
            .iter()
            .zip(&self.early)
            .all(|(s, &early)| *s == State::Done || (scope == Scope::Early && !early))
    }

    /// Nothing is left to start.
    fn started_all(&self) -> bool {
        self.state.iter().all(|s| *s != State::Waiting)
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Done {
    pub(crate) index: usize,
    pub(crate) result: Result<(), Errno>,
    /// The kernel refused the cmdline's options (EINVAL) and the module was
    /// loaded again without them.
    pub(crate) params_rejected: bool,
}

/// Loads one job through `finit`. When the kernel rejects the cmdline's
/// options (EINVAL: a value its parameter cannot take makes load_module
/// fail), loads once more without them, so that a typo on the cmdline
/// cannot keep the disk driver out.
pub(crate) fn load_job(
    finit: &mut dyn FnMut(&Path, &CStr) -> Result<(), Errno>,
    index: usize,
    job: &Job,
) -> Done {
    // The cmdline was cut at its first NUL, so an option never holds one.
    let Ok(params) = CString::new(job.params.as_str()) else {
        return Done {
            index,
            result: Err(Errno::EINVAL),
            params_rejected: false,
        };
    };
    let mut done = Done {
        index,
        result: finit(&job.path, &params),
        params_rejected: false,
    };
    if done.result == Err(Errno::EINVAL) && !job.params.is_empty() {
        done.params_rejected = true;
        done.result = finit(&job.path, c"");
    }
    done
}

/// The loader's state, shared by its threads and the waiting caller.
struct Shared {
    scheduler: Scheduler,
    /// Ended jobs not yet handed to a waiter.
    finished: Vec<Done>,
}

/// Modules being loaded (`Sys::load_modules`); `Sys::wait_modules`
/// collects them.
pub(crate) struct Loading {
    jobs: Arc<Vec<Job>>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // A loader thread cannot panic while it holds the lock (and PID 1 aborts
    // on a panic): a poisoned lock still holds consistent state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Loading {
    fn new(jobs: Vec<Job>) -> Self {
        Loading {
            shared: Arc::new((
                Mutex::new(Shared {
                    scheduler: Scheduler::new(&jobs),
                    finished: Vec::new(),
                }),
                Condvar::new(),
            )),
            jobs: Arc::new(jobs),
        }
    }

    /// The jobs, in list order (a [`Done`]'s index points here).
    pub(crate) fn jobs(&self) -> &[Job] {
        &self.jobs
    }

    /// Runs every job in the calling thread, in the scheduler's order: the
    /// fake's way, and the real one's when no thread can be started.
    pub(crate) fn inline(
        jobs: Vec<Job>,
        finit: &mut dyn FnMut(&Path, &CStr) -> Result<(), Errno>,
    ) -> Self {
        let loading = Loading::new(jobs);
        {
            let mut shared = lock(&loading.shared.0);
            while let Some(i) = shared.scheduler.next() {
                let done = load_job(finit, i, &loading.jobs[i]);
                shared.scheduler.finish(i);
                shared.finished.push(done);
            }
        }
        loading
    }

    /// Starts up to `threads` threads loading `jobs` through `finit`; when
    /// none can be started, loads them here.
    pub(crate) fn spawn(
        jobs: Vec<Job>,
        threads: usize,
        finit: fn(&Path, &CStr) -> Result<(), Errno>,
    ) -> Self {
        let loading = Loading::new(jobs);
        let mut started = 0;
        for n in 0..threads.max(1).min(loading.jobs.len()) {
            let (shared, jobs) = (Arc::clone(&loading.shared), Arc::clone(&loading.jobs));
            let spawned = std::thread::Builder::new()
                .name(format!("modules{n}"))
                .spawn(move || work(&shared, &jobs, finit));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => log::warn!("cannot start a module loader thread: {e}"),
            }
        }
        if started == 0 && !loading.jobs.is_empty() {
            let jobs = loading.jobs.to_vec();
            return Loading::inline(jobs, &mut |p, c| finit(p, c));
        }
        loading
    }

    /// Waits until every job of `scope` ended, or `timeout` passed; returns
    /// the jobs that ended since the last wait.
    pub(crate) fn wait(&mut self, scope: Scope, timeout: Duration) -> Vec<Done> {
        let (mutex, ended) = &*self.shared;
        let deadline = Instant::now() + timeout;
        let mut shared = lock(mutex);
        while !shared.scheduler.done(scope) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            shared = ended
                .wait_timeout(shared, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if !shared.scheduler.done(Scope::Early) {
            shared.scheduler.release();
            ended.notify_all();
        }
        std::mem::take(&mut shared.finished)
    }
}

/// One loader thread: takes the next job that may run until none is left.
fn work(
    shared: &(Mutex<Shared>, Condvar),
    jobs: &[Job],
    finit: fn(&Path, &CStr) -> Result<(), Errno>,
) {
    let (mutex, changed) = shared;
    loop {
        let index = {
            let mut state = lock(mutex);
            loop {
                if let Some(i) = state.scheduler.next() {
                    break i;
                }
                if state.scheduler.started_all() {
                    return;
                }
                state = changed.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
        };
        let done = load_job(&mut |p, c| finit(p, c), index, &jobs[index]);
        {
            let mut state = lock(mutex);
            state.scheduler.finish(index);
            state.finished.push(done);
        }
        changed.notify_all();
    }
}

/// What loading produced, for the log and the handoff.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LoadReport {
    pub(crate) loaded: usize,
    /// Already in the kernel (built in or loaded before).
    pub(crate) present: usize,
    /// Optional modules the kernel refused (another implementation serves).
    pub(crate) skipped: usize,
    /// Modules that failed.
    pub(crate) failed: usize,
    /// `path: error`, for each module that failed and each whose cmdline
    /// options the kernel rejected.
    pub(crate) errors: Vec<String>,
}

impl LoadReport {
    /// The modules that ended, whichever way.
    pub(crate) fn ended(&self) -> usize {
        self.loaded + self.present + self.skipped + self.failed
    }

    /// Counts the ended jobs and logs each failure.
    pub(crate) fn add(&mut self, jobs: &[Job], ended: &[Done]) {
        for done in ended {
            let Some(job) = jobs.get(done.index) else {
                continue;
            };
            let path = job.path.display();
            if done.params_rejected {
                let message = format!(
                    "{path}: the kernel rejected the cmdline options {:?}; loading it without them",
                    job.params
                );
                log::error!("{message}");
                self.errors.push(message);
            }
            match done.result {
                Ok(()) => self.loaded += 1,
                Err(Errno::EEXIST) => self.present += 1,
                Err(e) if job.optional => {
                    log::info!("optional module {path} not loaded: {e}");
                    self.skipped += 1;
                }
                Err(e) => {
                    log::error!("cannot load module {path}: {e}");
                    self.failed += 1;
                    self.errors.push(format!("{path}: {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::Fake;
    use crate::kernel::sys::Sys;

    #[test]
    fn module_names_from_paths() {
        let cases = [
            (
                "/lib/modules/v/kernel/drivers/usb/storage/usb-storage.ko",
                Some("usb_storage"),
            ),
            ("/lib/modules/v/virtio_blk.ko.xz", Some("virtio_blk")),
            ("/lib/modules/v/ext4.ko.zst", Some("ext4")),
            ("/lib/modules/v/.ko", None),
        ];
        for (path, want) in cases {
            assert_eq!(name_of(Path::new(path)).as_deref(), want, "{path}");
        }
        for (path, compressed) in [
            ("/m/virtio_blk.ko.xz", true),
            ("/m/ext4.ko.zst", true),
            ("/m/vfat.ko.gz", true),
            ("/m/overlay.ko", false),
            ("/m/odd.ko.bz2", false),
            ("/m/xz", false),
        ] {
            assert_eq!(
                crate::kernel::sys::is_compressed(Path::new(path)),
                compressed,
                "{path}"
            );
        }
    }

    /// `usb-storage.quirks=` on the cmdline reaches usb-storage.ko, whichever
    /// of `-` and `_` either side spells it with; other modules get nothing.
    #[test]
    fn cmdline_options_reach_their_module() {
        let c = crate::kernel::cmdline::Cmdline::parse(
            b"usb_storage.quirks=0bda:9210:u console=ttyS0 usb-storage.delay_use=0               virtio_blk.queue_depth=\"8\" sdhci.debug_quirks=\"1 2\"",
        );
        let options = c.module_options();
        let usb = name_of(Path::new("/m/usb-storage.ko")).unwrap();
        assert_eq!(params_for(&usb, &options), "quirks=0bda:9210:u delay_use=0");
        assert_eq!(params_for("virtio-blk", &options), "queue_depth=8");
        assert_eq!(params_for("sdhci", &options), "debug_quirks=\"1 2\"");
        assert_eq!(params_for("ext4", &options), "");
    }

    const V2: &str = "# slotinit modules.load v2\n\
        /m/virtio_pci.ko early\n\
        /m/virtio_blk.ko early after=virtio_pci\n\
        /m/crc16.ko\n\
        /m/jbd2.ko\n\
        /m/ext4.ko after=crc16,jbd2,builtin_thing\n\
        /m/fat.ko\n\
        /m/vfat.ko after=fat\n\
        /m/aes-neon-blk.ko optional\n\
        /m/i6300esb.ko early\n";

    /// The v2 list: flags and prerequisites by name (a name not in the list
    /// is built in); the cmdline's options reach their module.
    #[test]
    fn plans_a_v2_list() {
        let c = crate::kernel::cmdline::Cmdline::parse(b"virtio-blk.queue_depth=8");
        let jobs = plan(V2, &c.module_options());
        let brief: Vec<(&str, bool, bool, Vec<usize>)> = jobs
            .iter()
            .map(|j| {
                (
                    j.path.to_str().unwrap(),
                    j.early,
                    j.optional,
                    j.after.clone(),
                )
            })
            .collect();
        assert_eq!(
            brief,
            [
                ("/m/virtio_pci.ko", true, false, vec![]),
                ("/m/virtio_blk.ko", true, false, vec![0]),
                ("/m/crc16.ko", false, false, vec![]),
                ("/m/jbd2.ko", false, false, vec![]),
                ("/m/ext4.ko", false, false, vec![2, 3]),
                ("/m/fat.ko", false, false, vec![]),
                ("/m/vfat.ko", false, false, vec![5]),
                ("/m/aes-neon-blk.ko", false, true, vec![]),
                ("/m/i6300esb.ko", true, false, vec![]),
            ]
        );
        assert_eq!(jobs[1].params, "queue_depth=8");
        assert_eq!(jobs[0].params, "");
    }

    /// A list without the v2 header (by hand, or from an older builder) loads
    /// one module at a time in its order; `after=` naming a later line (out of
    /// order) is ignored rather than waited on forever.
    #[test]
    fn plans_a_plain_list_one_at_a_time() {
        let jobs = plan("# generated\n/m/a.ko\n\n  /m/b.ko  \n/m/c.ko\n", &[]);
        let after: Vec<Vec<usize>> = jobs.iter().map(|j| j.after.clone()).collect();
        assert_eq!(after, [vec![], vec![0], vec![1]]);
        let jobs = plan(
            &format!("{HEADER_V2}\n/m/a.ko after=b\n/m/b.ko after=a\n"),
            &[],
        );
        assert_eq!(jobs[0].after, Vec::<usize>::new());
        assert_eq!(jobs[1].after, [0]);
    }

    /// The scheduler starts the first job whose prerequisites are done, the
    /// early ones alone until they are all in; then independent jobs overlap.
    #[test]
    fn scheduler_orders_by_prerequisites_and_list_order() {
        let jobs = plan(V2, &[]);
        let mut s = Scheduler::new(&jobs);
        // Threads start virtio_pci and i6300esb (independent early jobs);
        // virtio_blk waits for virtio_pci, the rest for the early ones.
        assert_eq!([s.next(), s.next(), s.next()], [Some(0), Some(8), None]);
        s.finish(0);
        assert_eq!(s.next(), Some(1), "virtio_blk once virtio_pci is in");
        s.finish(8);
        assert_eq!(s.next(), None, "virtio_blk still loading");
        assert!(!s.done(Scope::Early));
        s.finish(1);
        assert!(s.done(Scope::Early));
        assert!(!s.done(Scope::All));
        // Now the rest, as many at once as they allow.
        assert_eq!([s.next(), s.next()], [Some(2), Some(3)]);
        assert_eq!(s.next(), Some(5), "fat needs nothing");
        assert_eq!(s.next(), Some(7));
        assert_eq!(s.next(), None, "ext4 and vfat wait");
        s.finish(2);
        assert_eq!(s.next(), None, "ext4 still waits for jbd2");
        s.finish(3);
        assert_eq!(s.next(), Some(4));
        s.finish(5);
        assert_eq!(s.next(), Some(6));
        assert!(!s.started_all() || s.next().is_none());
        for i in [4, 6, 7] {
            s.finish(i);
        }
        assert!(s.started_all());
        assert!(s.done(Scope::All));
    }

    /// Every ordering a scheduler may produce with any number of threads
    /// respects the prerequisites: simulated with jobs ending in every order.
    #[test]
    fn no_job_starts_before_its_prerequisites() {
        let jobs = plan(V2, &[]);
        for seed in 0u64..200 {
            let mut s = Scheduler::new(&jobs);
            let mut running: Vec<usize> = Vec::new();
            let mut done: Vec<usize> = Vec::new();
            let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let threads = 1 + (seed % 4) as usize;
            while done.len() < jobs.len() {
                while running.len() < threads {
                    let Some(i) = s.next() else { break };
                    assert!(
                        jobs[i].after.iter().all(|d| done.contains(d)),
                        "seed {seed}: job {i} started before {:?}",
                        jobs[i].after
                    );
                    running.push(i);
                }
                assert!(!running.is_empty(), "seed {seed}: stalled with {done:?}");
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let i = running.remove((x >> 33) as usize % running.len());
                s.finish(i);
                done.push(i);
            }
            assert!(s.done(Scope::All));
        }
    }

    /// Loaded through the fake in the scheduler's order: one already there is
    /// counted, one that fails is reported and the rest still load, an
    /// optional one's failure is not an error, options the kernel rejects are
    /// dropped for a second try.
    #[test]
    fn jobs_load_through_sys_and_are_reported() {
        let mut sys = Fake {
            errno: vec![
                ("finit_module /m/virtio_blk.ko".into(), libc::EEXIST),
                ("finit_module /m/jbd2.ko".into(), libc::ENOEXEC),
                ("finit_module /m/aes-neon-blk.ko".into(), libc::ENODEV),
                (
                    "finit_module /m/usb-storage.ko \"quirks=x\"".into(),
                    libc::EINVAL,
                ),
            ],
            ..Default::default()
        };
        let c = crate::kernel::cmdline::Cmdline::parse(b"usb-storage.quirks=x");
        let jobs = plan(&format!("{V2}/m/usb-storage.ko\n"), &c.module_options());
        let mut loading = sys.load_modules(jobs.clone(), None);
        let mut report = LoadReport::default();
        report.add(
            &jobs,
            &sys.wait_modules(&mut loading, Scope::All, Duration::ZERO),
        );
        assert_eq!(
            sys.calls,
            [
                "load-modules 10 threads auto",
                "finit_module /m/virtio_pci.ko \"\"",
                "finit_module /m/virtio_blk.ko \"\"",
                "finit_module /m/i6300esb.ko \"\"",
                "finit_module /m/crc16.ko \"\"",
                "finit_module /m/jbd2.ko \"\"",
                "finit_module /m/ext4.ko \"\"",
                "finit_module /m/fat.ko \"\"",
                "finit_module /m/vfat.ko \"\"",
                "finit_module /m/aes-neon-blk.ko \"\"",
                "finit_module /m/usb-storage.ko \"quirks=x\"",
                "finit_module /m/usb-storage.ko \"\"",
                "wait-modules all",
            ]
        );
        assert_eq!((report.loaded, report.present, report.skipped), (7, 1, 1));
        assert_eq!(report.failed, 1);
        assert_eq!(report.errors.len(), 2, "{:?}", report.errors);
        assert!(
            report.errors[0].starts_with("/m/jbd2.ko: ENOEXEC"),
            "{:?}",
            report.errors
        );
        assert!(report.errors[1].contains("rejected the cmdline options \"quirks=x\""));
    }

    /// Real threads (a stand-in finit that records and sleeps): every job
    /// runs once, after its prerequisites; the early wait returns with the
    /// early jobs ended; a wait that times out returns what ended so far.
    #[test]
    fn threads_load_every_job_once_in_order() {
        use std::sync::Mutex as M;
        static LOG: M<Vec<(String, bool)>> = M::new(Vec::new());
        fn finit(path: &Path, _: &CStr) -> Result<(), Errno> {
            let name = path.to_string_lossy().into_owned();
            LOG.lock().unwrap().push((name.clone(), true));
            std::thread::sleep(Duration::from_millis(if name.contains("jbd2") {
                60
            } else {
                5
            }));
            LOG.lock().unwrap().push((name, false));
            Ok(())
        }
        let jobs = plan(V2, &[]);
        let mut loading = Loading::spawn(jobs.clone(), 3, finit);
        let early = loading.wait(Scope::Early, Duration::from_secs(10));
        let early_ended: Vec<usize> = early.iter().map(|d| d.index).collect();
        for i in [0, 1, 8] {
            assert!(early_ended.contains(&i), "{early_ended:?}");
        }
        let rest = loading.wait(Scope::All, Duration::from_secs(10));
        assert_eq!(early.len() + rest.len(), jobs.len());
        let log = LOG.lock().unwrap().clone();
        for (i, job) in jobs.iter().enumerate() {
            let p = job.path.to_string_lossy();
            let start = log.iter().position(|(n, s)| *n == p && *s).unwrap();
            assert_eq!(
                log.iter().filter(|(n, s)| *n == p && *s).count(),
                1,
                "{p} once"
            );
            for &d in &job.after {
                let dp = jobs[d].path.to_string_lossy();
                let end = log.iter().position(|(n, s)| *n == dp && !*s).unwrap();
                assert!(end < start, "job {i} started before {dp} ended: {log:?}");
            }
        }
        // Something overlapped: a second job started before jbd2 ended.
        let jbd2_start = log
            .iter()
            .position(|(n, s)| n.contains("jbd2") && *s)
            .unwrap();
        let jbd2_end = log
            .iter()
            .position(|(n, s)| n.contains("jbd2") && !*s)
            .unwrap();
        assert!(
            log[jbd2_start + 1..jbd2_end].iter().any(|(_, s)| *s),
            "no overlap: {log:?}"
        );
    }

    /// A module that never returns (a hung driver init) must not hold PID 1:
    /// the wait ends at its timeout with what ended.
    #[test]
    fn a_hung_module_does_not_hold_the_wait() {
        fn finit(path: &Path, _: &CStr) -> Result<(), Errno> {
            if path.ends_with("hang.ko") {
                std::thread::sleep(Duration::from_secs(3600));
            }
            Ok(())
        }
        let jobs = plan(&format!("{HEADER_V2}\n/m/hang.ko early\n/m/b.ko\n"), &[]);
        let mut loading = Loading::spawn(jobs, 2, finit);
        let t = Instant::now();
        // The early wait gives up; then the rest may load without it.
        assert_eq!(loading.wait(Scope::Early, Duration::from_millis(200)), []);
        let ended = loading.wait(Scope::All, Duration::from_millis(500));
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(ended.iter().map(|d| d.index).collect::<Vec<_>>(), [1]);
    }
}
