//! The boot pipeline as PID 1 runs it: each stage is one call here, timed and
//! logged, and every failure ends in the configured fallback, never in a panic.

use crate::config::Config;
use crate::config::{Commit, Counter};
use crate::decide::slot::{self, Inputs};
use crate::decide::sources;
use crate::disk::devices::{self, Resolved};
use crate::disk::uevent;
use crate::handoff::Handoff;
use crate::kernel::cmdline::{BootArgs, Cmdline};
use crate::kernel::sys::Real;
use crate::kernel::{kmsg, modules, switch_root};
use crate::mount::executor::{self, MachineIdOutcome};
use crate::mount::plan::{self, Roots, Step};
use crate::paths::{CONFIG_PATH, HANDOFF_PATH, RUN_CONFIG, RUN_DIR, STATE_MOUNT};
use crate::state::uboot::store::{self, Store};
use crate::types::error_chain;
use crate::types::Slot;
use log::LevelFilter;
use nix::mount::MsFlags;
use std::path::Path;
use std::time::{Duration, Instant};

/// Times stages and records them for the log and the handoff.
struct Timer {
    start: Instant,
    last: Instant,
}

impl Timer {
    fn new() -> Self {
        let now = Instant::now();
        Timer {
            start: now,
            last: now,
        }
    }

    fn stage(&mut self, handoff: &mut Handoff, name: &str) {
        let now = Instant::now();
        let us = now.duration_since(self.last).as_micros() as u64;
        self.last = now;
        log::info!("{name}: {us} us");
        handoff.timings_us.push((name.to_string(), us));
    }

    fn total_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

/// PID 1's whole life in the initramfs. Never returns.
pub fn run() -> ! {
    let mut timer = Timer::new();
    let mut handoff = Handoff::new();
    mount_api_filesystems();
    ensure_console();
    let cmdline_text = std::fs::read("/proc/cmdline").unwrap_or_default();
    let cmdline = Cmdline::parse(&cmdline_text);
    let mut args = BootArgs::from_cmdline(&cmdline);
    // What the kernel really handed PID 1 (`single`, the words after `--`),
    // for the system's init; BootArgs' own list is the model of it.
    args.init_argv = crate::kernel::cmdline::kernel_init_argv(std::env::args_os());
    kmsg::init_kmsg(if args.debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    });
    install_panic_fallback();
    log::info!("starting (pid {})", std::process::id());
    for warning in &args.warnings {
        log::warn!("{warning}");
        handoff.warnings.push(warning.clone());
    }
    let config = match Config::load(Path::new(CONFIG_PATH)) {
        Ok(config) => {
            // The subcommands in the booted system read the config the init used.
            let _ = std::fs::create_dir_all(RUN_DIR);
            if let Err(e) = std::fs::copy(CONFIG_PATH, RUN_CONFIG) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("cannot copy {CONFIG_PATH} to {RUN_CONFIG}: {e}");
                }
            }
            config
        }
        // Fail closed: the built-in defaults would unlock what a production
        // config locks (`allow_override`, who counts), so an invalid config
        // boots nothing. initramfs/build refuses such a config; only a damaged
        // or tampered initramfs gets here. The reboot delay is the default's.
        Err(e) => fatal(
            &format!("config: {}; refusing to boot with it", error_chain(&e)),
            &args,
            &Config::default(),
            &mut handoff,
        ),
    };
    timer.stage(&mut handoff, "setup");

    let listener = uevent::Listener::open();
    let report = modules::load_all_with(
        Path::new(crate::paths::LOAD_LIST),
        &cmdline.module_options(),
    );
    log::info!(
        "modules: {} loaded, {} already present, {} failed",
        report.loaded,
        report.present,
        report.failed.len()
    );
    handoff
        .errors
        .extend(report.failed.iter().map(|f| format!("module {f}")));
    timer.stage(&mut handoff, "modules");

    // Bare partition numbers are on the disk the bootloader's word names.
    let boot_disk = devices::BootDiskHint::new(&cmdline, &config);
    let waited = uevent::wait_for(
        &listener,
        Path::new("/sys"),
        &uevent::Lookup {
            names: &config.partitions,
            hint: &boot_disk,
            gpt_dev: needs_uuids(&config, &cmdline).then_some(Path::new("/dev")),
            force_gpt: cmdline.force_gpt(),
        },
        Duration::from_millis(config.boot.device_timeout_ms),
        Duration::from_millis(config.boot.settle_ms),
    );
    drop(listener);
    if waited.timed_out {
        let message = format!(
            "timed out after {} ms waiting for the disk; {} partitions found",
            config.boot.device_timeout_ms,
            waited.partitions.len()
        );
        log::error!("{message}");
        handoff.errors.push(message);
    }
    let resolved = devices::resolve_with(&waited.partitions, &config.partitions, &boot_disk);
    for problem in &resolved.problems {
        log::warn!("{problem}");
        handoff.warnings.push(problem.clone());
    }
    handoff.devices = resolved.clone();
    timer.stage(&mut handoff, "devices");

    let mut store = open_store(&config, &resolved, &mut handoff);
    timer.stage(&mut handoff, "state");

    let roots = Roots::default();
    let init = args
        .init
        .clone()
        .unwrap_or_else(|| config.boot.init.clone());
    // Decide, commit the counters, mount; a slot that cannot be used is marked
    // bad and the other one is tried in this same boot.
    let mut failed: Vec<(Slot, String)> = Vec::new();
    let active = loop {
        let slot = match decide(
            &config,
            &args,
            &cmdline,
            &resolved,
            store.as_mut(),
            &failed,
            &mut handoff,
        ) {
            Ok(slot) => slot,
            Err(cause) => {
                close_store(store, &mut handoff);
                fatal(&cause, &args, &config, &mut handoff)
            }
        };
        timer.stage(&mut handoff, "decision");
        create_links(&resolved, slot, &mut handoff);
        timer.stage(&mut handoff, "links");
        match mount_root(&config, &roots, &resolved, slot, &init, &mut handoff) {
            Ok(()) => break slot,
            Err(cause) => {
                log::error!("slot {slot}: {cause}");
                handoff.errors.push(format!("slot {slot}: {cause}"));
                // What the root plan mounted: the sysroot and, for overlays,
                // the lower system and the tmpfs uppers under /run.
                unmount_beneath(&[
                    &roots.sysroot,
                    &roots.run_dir.join("lower"),
                    &roots.run_dir.join("overlay"),
                ]);
                failed.push((slot, cause));
            }
        }
    };
    if config.bootstate.commit == Commit::OnMount {
        commit_good(&config, store.as_mut(), active, &mut handoff);
    }
    close_store(store, &mut handoff);
    mount_persistent(&config, &roots, &resolved, active, &mut handoff);
    timer.stage(&mut handoff, "mounts");

    handoff.init = Some(init.clone());
    handoff.init_args = args.init_argv.clone();
    let total = timer.total_us();
    handoff.timings_us.push(("total".into(), total));
    handoff.vmhwm_kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| crate::handoff::parse_vmhwm_kb(&s));
    if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        let us = |t: nix::sys::time::TimeVal| (t.tv_sec() as u64) * 1_000_000 + t.tv_usec() as u64;
        handoff.cpu_user_us = Some(us(usage.user_time()));
        handoff.cpu_sys_us = Some(us(usage.system_time()));
    }
    write_handoff(&handoff);
    log::info!("switching to {init} after {total} us");
    let Err(e) = switch_root::switch_root(&roots.sysroot, &init, &args.init_argv);
    // The initramfs may be gone now: no shell to fall back to, only a reboot.
    fatal(&error_chain(&e), &args, &config, &mut handoff)
}

/// Mounts the slot's system read-only at the sysroot and checks it has an init.
fn mount_root(
    config: &Config,
    roots: &Roots,
    resolved: &Resolved,
    slot: Slot,
    init: &str,
    handoff: &mut Handoff,
) -> Result<(), String> {
    let system = resolved.system(slot).ok_or_else(|| {
        format!(
            "its system partition {} was not found",
            config.partitions.reference(&format!("system_{slot}"))
        )
    })?;
    if let Err(e) = std::fs::create_dir_all(&roots.sysroot) {
        log::warn!("cannot create {}: {e}", roots.sysroot.display());
    }
    let steps = plan::root_plan(config, roots, system);
    executor::run(&mut Real, &roots.sysroot, &steps).map_err(|e| error_chain(&e))?;
    if !switch_root::is_executable_in(&roots.sysroot, init) {
        return Err(format!(
            "no executable {init} in its system ({})",
            system.node().display()
        ));
    }
    record_mounts(handoff, &steps);
    Ok(())
}

/// Mounts the persistent partition with its binds and machine-id. A partition
/// that is missing, does not mount or comes up read-only degrades to tmpfs and a
/// transient machine-id; a single directory or bind that fails (a planted
/// symlink, a full disk) gets a tmpfs in its place and the rest goes on.
fn mount_persistent(
    config: &Config,
    roots: &Roots,
    resolved: &Resolved,
    active: Slot,
    handoff: &mut Handoff,
) {
    let mut sys = Real;
    let slot_dir = devices::slot_dir(resolved, active);
    handoff.slot_dir = Some(slot_dir.clone());
    let root = plan::in_sysroot(&roots.sysroot, &config.persistent.mountpoint);
    let degrade = |cause: String, seed: Option<&Path>, handoff: &mut Handoff| {
        let message =
            format!("{cause}; booting with tmpfs in its place and a transient machine-id");
        log::error!("{message}");
        handoff.errors.push(message);
        handoff.persistent_degraded = true;
        let steps = plan::fallback_plan(config, roots, &slot_dir, seed);
        let (outcome, failed) =
            executor::run_each(&mut Real, &roots.sysroot, &steps, |_| Vec::new());
        for (_, e) in failed {
            // Even this failing leaves a bootable, read-only system.
            let message = format!("fallback: {}", error_chain(&e));
            log::error!("{message}");
            handoff.errors.push(message);
        }
        record_mounts(handoff, &steps);
        outcome
    };
    let outcome = match &resolved.persistent {
        None => degrade(
            format!(
                "no persistent partition {}",
                config.partitions.reference("persistent")
            ),
            None,
            handoff,
        ),
        Some(part) if config.persistent.fsck && !check_persistent(config, part, "-p", handoff) => {
            degrade(
                format!(
                    "persistent partition {}: the filesystem check could not repair it",
                    part.node().display()
                ),
                None,
                handoff,
            )
        }
        Some(part) => {
            let steps = plan::persistent_plan(config, roots, part, &slot_dir);
            let (mount, rest) = steps.split_at(1);
            let mut mounted = executor::run(&mut sys, &roots.sysroot, mount);
            let repair = match &mounted {
                Err(e) => repair_unmountable(config, part, e, handoff),
                Ok(_) => None,
            };
            if repair == Some(true) {
                mounted = executor::run(&mut sys, &roots.sysroot, mount);
            }
            match mounted {
                Err(e) => degrade(
                    format!(
                        "persistent partition {}: {}",
                        part.node().display(),
                        error_chain(&e)
                    ),
                    None,
                    handoff,
                ),
                Ok(_) if is_read_only(&root) => {
                    // errors=remount-ro, or a read-only feature: keep it mounted
                    // for rescue, keep the machine-id it holds, write elsewhere.
                    record_mounts(handoff, mount);
                    degrade(
                        format!(
                            "persistent partition {} is read-only",
                            part.node().display()
                        ),
                        Some(&root),
                        handoff,
                    )
                }
                Ok(_) => {
                    record_mounts(handoff, mount);
                    let mut replaced = Vec::new();
                    let (mut outcome, failed) =
                        executor::run_each(&mut sys, &roots.sysroot, rest, |step| match step {
                            Step::BindBeneath { target, .. } => {
                                let steps = plan::bind_fallback(config, roots, &slot_dir, target);
                                replaced.extend(steps.clone());
                                steps
                            }
                            _ => Vec::new(),
                        });
                    let failed_steps: Vec<Step> = failed.iter().map(|(s, _)| s.clone()).collect();
                    record_mounts(
                        handoff,
                        &rest
                            .iter()
                            .chain(&replaced)
                            .filter(|s| !failed_steps.contains(s))
                            .cloned()
                            .collect::<Vec<_>>(),
                    );
                    for (step, e) in failed {
                        let message = format!("persistent: {}", error_chain(&e));
                        log::error!("{message}");
                        handoff.errors.push(message);
                        // Beneath a failed step: nothing was put in its place.
                        if matches!(e, executor::StepError::Skipped { .. }) {
                            continue;
                        }
                        match step {
                            Step::BindBeneath { target, .. } => {
                                handoff
                                    .warnings
                                    .push(format!("{} is a tmpfs this boot", target.display()));
                            }
                            Step::MachineId { .. } => {
                                let steps = plan::transient_machine_id(config, roots, Some(&root));
                                match executor::run(&mut sys, &roots.sysroot, &steps) {
                                    Ok(o) => outcome.machine_id = o.machine_id,
                                    Err(e) => handoff
                                        .errors
                                        .push(format!("machine-id: {}", error_chain(&e))),
                                }
                                handoff.persistent_degraded = true;
                            }
                            _ => {}
                        }
                    }
                    outcome
                }
            }
        }
    };
    match outcome.machine_id {
        Some(MachineIdOutcome::Kept(id)) => {
            let source = if handoff.persistent_degraded {
                "persistent-copy"
            } else {
                "persistent"
            };
            log::info!("machine-id {id} (kept, {source})");
            handoff.machine_id = Some(id);
            handoff.machine_id_source = Some(source.into());
        }
        Some(MachineIdOutcome::Generated { id, replaced }) => {
            let source = if handoff.persistent_degraded {
                "transient"
            } else {
                "persistent"
            };
            log::info!("machine-id {id} (generated, {source}; was {replaced})");
            handoff.machine_id = Some(id);
            handoff.machine_id_source = Some(format!("generated-{source}"));
        }
        None => {}
    }
}

/// A persistent partition that does not mount (a power cut tore its
/// superblock or a journal commit block: the kernel refuses it with EUCLEAN)
/// is checked and mounted again before the tmpfs fallback, when the initramfs
/// carries the checker: `-p` first, then `-y` (systemd's `fsck.repair=yes`:
/// nobody is there to answer, and the alternative is no persistent data on
/// this or any later boot). None when no check was tried (the check ran
/// before the mount already, or there is no checker); else whether to retry.
fn repair_unmountable(
    config: &Config,
    part: &crate::disk::devices::Partition,
    error: &executor::StepError,
    handoff: &mut Handoff,
) -> Option<bool> {
    if config.persistent.fsck || !Path::new(&config.persistent.fsck_path).exists() {
        return None;
    }
    let message = format!(
        "persistent partition {} does not mount ({}); checking it",
        part.node().display(),
        error_chain(error)
    );
    log::warn!("{message}");
    handoff.warnings.push(message);
    Some(
        check_persistent(config, part, "-p", handoff)
            || check_persistent(config, part, "-y", handoff),
    )
}

/// Runs `e2fsck FLAG` (`-p` as rpi-image-gen's hooks do) on the persistent
/// partition. False when the filesystem must not be mounted (errors left, or
/// the check could not run on it); a missing checker is an error but not a
/// reason to stop.
fn check_persistent(
    config: &Config,
    part: &crate::disk::devices::Partition,
    flag: &str,
    handoff: &mut Handoff,
) -> bool {
    let tool = &config.persistent.fsck_path;
    log::debug!("exec {tool} {flag} {}", part.node().display());
    let status = std::process::Command::new(tool)
        .arg(flag)
        .arg(part.node())
        .stdin(std::process::Stdio::null())
        .status();
    let (ok, text) = match status {
        Err(e) => (
            true,
            format!("{tool} could not run: {e}; mounting unchecked"),
        ),
        Ok(s) => match s.code() {
            Some(code) => {
                let verdict = fsck_verdict(code);
                (
                    code < 4,
                    format!(
                        "{tool} {flag} {}: exit {code} ({verdict})",
                        part.node().display()
                    ),
                )
            }
            None => (false, format!("{tool} killed by a signal")),
        },
    };
    if ok {
        log::info!("{text}");
    } else {
        log::error!("{text}");
    }
    handoff.fsck = Some(text);
    ok
}

/// What an e2fsck exit code means (e2fsck(8): bits).
pub fn fsck_verdict(code: i32) -> &'static str {
    match code {
        0 => "clean",
        1 => "errors corrected",
        2 | 3 => "errors corrected, reboot advised",
        c if c & 4 != 0 => "errors left uncorrected",
        c if c & 8 != 0 => "operational error",
        _ => "failed",
    }
}

/// True when the filesystem at `path` is mounted read-only.
fn is_read_only(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Opens the boot-state store; a store that cannot be opened is logged and the
/// boot goes on without counters.
fn open_store(config: &Config, resolved: &Resolved, handoff: &mut Handoff) -> Option<Store> {
    let bs = &config.bootstate;
    let partition = store::member(resolved, &bs.partition);
    match store::open(bs, partition, Path::new(STATE_MOUNT)) {
        Ok(Some(store)) => {
            let record = store.record();
            match &record.error {
                Some(e) => {
                    let message = format!(
                        "boot state {} unusable: {e}; booting the default slot, not writing it",
                        record.location
                    );
                    log::error!("{message}");
                    handoff.errors.push(message);
                }
                None => log::info!("boot state {}: {}", record.location, record.health),
            }
            handoff.bootstate = Some(record);
            Some(store)
        }
        Ok(None) => None,
        Err(e) => {
            let message = format!("{}; booting without counters", error_chain(&e));
            log::error!("{message}");
            handoff.errors.push(message);
            None
        }
    }
}

/// One slot decision, with its state committed durably before the slot is used.
fn decide(
    config: &Config,
    args: &BootArgs,
    cmdline: &Cmdline,
    resolved: &Resolved,
    store: Option<&mut Store>,
    failed: &[(Slot, String)],
    handoff: &mut Handoff,
) -> Result<Slot, String> {
    let bs = &config.bootstate;
    let names = store::bootnames(bs).map_err(|e| format!("bootstate config: {e}"))?;
    let rauc = store::rauc_config(bs).map_err(|e| format!("bootstate config: {e}"))?;
    let state = store.as_deref().and_then(|s| s.state(bs));
    // What the medium holds now: the fallback if this boot's count cannot be
    // written. A fresh store holds nothing.
    let on_disk = store.as_deref().and_then(|s| match &s.contents {
        store::Contents::State(st) => Some(st.clone()),
        _ => None,
    });
    // Without a store there is nothing to count: the bootloader's word decides.
    let counter = match bs.backend {
        crate::config::Backend::None => Counter::Bootloader,
        crate::config::Backend::UbootEnv => bs.counter,
    };
    let dt_partition = std::fs::read(crate::paths::DT_PARTITION)
        .ok()
        .and_then(|b| sources::parse_dt_u32(&b));
    let (hint, asked) = sources::find(
        &config.boot.sources,
        &sources::Facts {
            cmdline,
            rauc_key: &bs.cmdline_key,
            names: &names,
            resolved,
            dt_partition,
        },
    );
    if counter == Counter::Bootloader {
        for line in &asked {
            log::info!("{line}");
        }
    }
    handoff.hint = hint.clone();
    let override_slot = match args.slot_override {
        Some(slot) if !config.boot.allow_override => {
            let message = format!("ignoring slotinit.slot={slot}: boot.allow_override is false");
            log::warn!("{message}");
            handoff.warnings.push(message);
            None
        }
        other => other,
    };
    let inputs = Inputs {
        override_slot,
        default_slot: config.boot.default_slot,
        counter,
        hint: hint.as_ref(),
        state: state.as_ref(),
        names: &names,
        config: &rauc,
        failed,
    };
    let mut outcome = slot::decide(&inputs)?;
    for note in &outcome.notes {
        log::info!("{note}");
    }
    for error in &outcome.errors {
        log::error!("{error}");
        handoff.errors.push(error.clone());
    }
    if let Some(store) = store {
        let written = match &outcome.state {
            Some(new) => store
                .commit(new, outcome.fallback.as_deref())
                .map(|()| true)
                .map_err(|e| error_chain(&e)),
            None => store.repair().map_err(|e| error_chain(&e)),
        };
        // Store::commit takes the new state as its contents once it is on the
        // medium; what fails after that (repairing the other copy) loses no count.
        let durable = |store: &Store| {
            matches!((&outcome.state, &store.contents),
                (Some(new), store::Contents::State(now)) if new == now)
        };
        match written {
            Ok(true) => log::info!("boot state committed: {}", store.loaded.health),
            Ok(false) => {}
            Err(e) if outcome.counted && !durable(store) => {
                outcome = slot::uncounted(&inputs, &outcome, on_disk.as_ref(), &e);
                for error in &outcome.errors {
                    log::error!("{error}");
                    handoff.errors.push(error.clone());
                }
            }
            Err(e) => {
                let message = if durable(store) {
                    format!("boot state committed, but {e}")
                } else {
                    format!("boot state not written: {e}")
                };
                log::error!("{message}");
                handoff.errors.push(message);
            }
        }
        handoff.bootstate = Some(store.record());
    }
    let decision = outcome.decision.clone();
    log::info!("slot {} ({:?})", decision.slot, decision.source);
    if outcome.fallback.is_some() {
        handoff.fallback = outcome.fallback;
    }
    handoff.slot = Some(decision.slot);
    handoff.decision = Some(decision.clone());
    Ok(decision.slot)
}

/// commit = "on-mount": the slot mounted and has an init, so it is good.
fn commit_good(config: &Config, store: Option<&mut Store>, slot: Slot, handoff: &mut Handoff) {
    let Some(store) = store else {
        return;
    };
    let bs = &config.bootstate;
    let (Some(state), Ok(names)) = (store.state(bs), store::bootnames(bs)) else {
        return;
    };
    let result = crate::state::uboot::rauc::mark_good(&state, names.of(slot), bs.attempts)
        .map_err(|e| e.to_string())
        .and_then(|m| store.commit(&m.state, None).map_err(|e| error_chain(&e)));
    match result {
        Ok(()) => log::info!("slot {slot} committed on mount"),
        Err(e) => {
            let message = format!("cannot commit slot {slot}: {e}");
            log::error!("{message}");
            handoff.errors.push(message);
        }
    }
    handoff.bootstate = Some(store.record());
}

fn close_store(store: Option<Store>, handoff: &mut Handoff) {
    if let Some(store) = store {
        handoff.bootstate = Some(store.record());
        store.close();
    }
}

/// PARTUUIDs cost a read of each disk's GPT: only when a member or `root=` uses one.
fn needs_uuids(config: &Config, cmdline: &Cmdline) -> bool {
    config
        .partitions
        .refs()
        .iter()
        .any(|(_, r)| matches!(r, crate::config::PartRef::Uuid(_)))
        || cmdline
            .get("root")
            .is_some_and(|r| r.starts_with("PARTUUID="))
}

/// Unmounts everything at or below any of `roots`, deepest (latest) first.
fn unmount_beneath(roots: &[&Path]) {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| roots.iter().any(|r| Path::new(p).starts_with(r)))
        .collect();
    points.reverse();
    for p in points {
        log::debug!("umount {p}");
        if let Err(e) = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH) {
            log::warn!("cannot unmount {p}: {e}");
        }
    }
}

fn record_mounts(handoff: &mut Handoff, steps: &[Step]) {
    for step in steps {
        match step {
            Step::Mount {
                source,
                target,
                fstype,
                readonly,
                options,
            } => handoff.mounts.push(format!(
                "{source} {} {fstype} {}{}{options}",
                target.display(),
                if *readonly { "ro" } else { "rw" },
                if options.is_empty() { "" } else { "," }
            )),
            Step::BindBeneath {
                root, path, target, ..
            } => handoff.mounts.push(format!(
                "{} {} bind",
                root.join(path).display(),
                target.display()
            )),
            _ => {}
        }
    }
}

/// /proc, /sys, /dev and /run; each failure is logged and the boot goes on, as
/// the later stages report precisely what is missing.
fn mount_api_filesystems() {
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mounts: [(&str, &str, MsFlags, &str); 4] = [
        ("proc", "/proc", nosuid_nodev_noexec, ""),
        ("sysfs", "/sys", nosuid_nodev_noexec, ""),
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID, "mode=0755"),
        (
            "tmpfs",
            "/run",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            "mode=0755",
        ),
    ];
    for (fstype, target, flags, data) in mounts {
        let _ = std::fs::create_dir_all(target);
        let data = (!data.is_empty()).then_some(data);
        if let Err(e) = nix::mount::mount(Some(fstype), target, Some(fstype), flags, data) {
            // Logging is not up yet (it needs /dev); the console may be.
            eprintln!("slotinit: cannot mount {fstype} on {target}: {e}");
        }
    }
}

/// Without /dev/console in the initramfs the kernel starts PID 1 with no stdio;
/// the system's init inherits ours, so give it the console.
fn ensure_console() {
    if Path::new("/proc/self/fd/0").exists() {
        return;
    }
    for _ in 0..3 {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
        {
            // Lowest free descriptors: 0, 1, 2. They live as long as PID 1.
            Ok(f) => std::mem::forget(f),
            Err(_) => return,
        }
    }
}

fn create_links(resolved: &Resolved, active: Slot, handoff: &mut Handoff) {
    for (link, target) in devices::by_slot_links(resolved, active) {
        let path = Path::new("/dev").join(&link);
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            })
            .and_then(|_| std::os::unix::fs::symlink(&target, &path));
        match result {
            Ok(()) => log::debug!("link {} -> {}", path.display(), target.display()),
            Err(e) => {
                let message = format!("cannot create {}: {e}", path.display());
                log::warn!("{message}");
                handoff.warnings.push(message);
            }
        }
    }
}

fn write_handoff(handoff: &Handoff) {
    let path = Path::new(HANDOFF_PATH);
    let result = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(path, handoff.to_json()));
    if let Err(e) = result {
        log::error!("cannot write {}: {e}", path.display());
    }
}

/// The end of every boot that cannot continue: log the cause, then an emergency
/// shell if asked for and present, else a reboot after the configured delay.
fn fatal(cause: &str, args: &BootArgs, config: &Config, handoff: &mut Handoff) -> ! {
    log::error!("fatal: {cause}");
    handoff.errors.push(format!("fatal: {cause}"));
    write_handoff(handoff);
    if args.emergency_shell {
        for shell in ["/bin/sh", "/bin/busybox"] {
            if Path::new(shell).exists() {
                log::error!("starting emergency shell {shell}");
                let argv: [&std::ffi::CStr; 2] = [c"/bin/sh", c"-i"];
                if let Ok(path) = std::ffi::CString::new(shell) {
                    // The shell starts as the kernel would start it: no
                    // signal ignored or blocked by the Rust runtime.
                    if let Err(e) = crate::kernel::sys::reset_signals() {
                        log::warn!("cannot reset signals: {e}");
                    }
                    let e = nix::unistd::execv(&path, &argv);
                    log::error!("cannot exec {shell}: {e:?}");
                }
            }
        }
        log::error!("slotinit.emergency=shell, but the initramfs has no shell");
    }
    reboot_after(config.boot.reboot_delay_s)
}

fn reboot_after(delay_s: u64) -> ! {
    log::error!("rebooting in {delay_s} s");
    std::thread::sleep(Duration::from_secs(delay_s));
    nix::unistd::sync();
    let e = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // PID 1 must not exit (the kernel would panic): wait for a human.
    log::error!("reboot failed: {e:?}; halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A panic in PID 1 would become a kernel panic. With panic=abort the hook is the
/// last code that runs: log it and reboot instead.
fn install_panic_fallback() {
    std::panic::set_hook(Box::new(|info| {
        log::error!("internal error: {info}");
        reboot_after(10)
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::uboot::envblock::{self, Env, Header};
    use std::path::PathBuf;

    /// A store holding `pairs` in `dir/sub/uboot.env`, opened, whose every
    /// later write fails: `dir/sub` is then a regular file (ENOTDIR), which
    /// stops root too, unlike a chmod.
    fn failing_store(dir: &Path, pairs: &[(&str, &str)]) -> (Config, Store, PathBuf) {
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("uboot.env");
        let env = Env::from_pairs(pairs.iter().copied()).unwrap();
        let block = envblock::serialize(&env, 0x4000, Header::Single).unwrap();
        std::fs::write(&file, &block).unwrap();
        let mut config = Config::default();
        config.bootstate.fw_env = vec![format!("{} 0x0 0x4000", file.display())];
        let store = store::open(&config.bootstate, None, dir).unwrap().unwrap();
        let kept = dir.join("kept");
        std::fs::rename(&sub, &kept).unwrap();
        std::fs::write(&sub, b"not a directory").unwrap();
        (config, store, kept.join("uboot.env"))
    }

    fn decide_with(config: &Config, store: &mut Store) -> (Result<Slot, String>, Handoff) {
        let cmdline = Cmdline::parse(b"");
        let args = BootArgs::from_cmdline(&cmdline);
        let mut handoff = Handoff::new();
        let slot = decide(
            config,
            &args,
            &cmdline,
            &Resolved::default(),
            Some(store),
            &[],
            &mut handoff,
        );
        (slot, handoff)
    }

    #[test]
    fn trial_whose_count_cannot_be_written_does_not_boot() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = [
            ("bootcmd", "run distro_bootcmd"),
            ("BOOT_ORDER", "B A"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "2"),
        ];
        let (config, mut store, kept) = failing_store(dir.path(), &pairs);
        let before = std::fs::read(&kept).unwrap();
        let (slot, handoff) = decide_with(&config, &mut store);
        assert_eq!(slot, Ok(Slot::A), "{:?}", handoff.errors);
        assert_eq!(
            handoff.decision.as_ref().map(|d| d.source),
            Some(slot::Source::Fallback)
        );
        assert!(
            handoff
                .errors
                .iter()
                .any(|e| e.contains("slot b would boot uncounted")),
            "{:?}",
            handoff.errors
        );
        assert!(handoff.fallback.is_some());
        assert_eq!(std::fs::read(&kept).unwrap(), before);
    }

    #[test]
    fn uncountable_boot_without_another_slot_boots_loudly() {
        let dir = tempfile::tempdir().unwrap();
        let pairs = [
            ("BOOT_ORDER", "B"),
            ("BOOT_A_LEFT", "0"),
            ("BOOT_B_LEFT", "3"),
        ];
        let (config, mut store, _) = failing_store(dir.path(), &pairs);
        let (slot, handoff) = decide_with(&config, &mut store);
        assert_eq!(slot, Ok(Slot::B));
        assert!(
            handoff.errors.iter().any(|e| e.contains("UNCOUNTED")),
            "{:?}",
            handoff.errors
        );
    }
}
