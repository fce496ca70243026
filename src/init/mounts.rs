//! The mount stages: the slot's system at the sysroot, then the persistent
//! partition with its binds and machine-id, degrading to tmpfs where it must.

use super::context::Boot;
use super::report::Report;
use super::verity;
use crate::disk::devices::{self, Partition};
use crate::handoff::MountRecord;
use crate::kernel::switch_root;
use crate::kernel::sys::Sys;
use crate::kind;
use crate::mount::executor::{self, MachineIdOutcome, Outcome};
use crate::mount::plan::{self, Step};
use crate::types::error_chain;
use crate::types::Slot;
use nix::mount::MntFlags;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// Mounts the slot's system read-only at the sysroot and checks it has an init.
pub(super) fn mount_root<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    slot: Slot,
    init: &str,
) -> Result<(), String> {
    let (config, roots) = (&boot.config, &boot.roots);
    let system = boot.resolved.system(slot).cloned().ok_or_else(|| {
        format!(
            "its system partition {} was not found",
            config.partitions.reference(&format!("system_{slot}"))
        )
    })?;
    if let Err(e) = boot.sys.create_dir_all(&roots.sysroot) {
        log::warn!("cannot create {}: {e}", roots.sysroot.display());
    }
    let verified = verity::setup(boot, slot, &system)?;
    let mounted = verified.as_ref().map_or(&system, |v| &v.partition);
    let steps = plan::root_plan(&boot.config, &boot.roots, mounted);
    let node = mounted.node();
    match (run_root_plan(boot, &steps, init, &node), verified) {
        (Ok(()), Some(v)) => {
            verity::arm(boot, v);
            Ok(())
        }
        (Ok(()), None) => Ok(()),
        (Err(cause), Some(v)) => {
            // The target goes once nothing of it is mounted.
            unmount_root(boot);
            verity::remove(boot.sys, &v.name);
            Err(cause)
        }
        (Err(cause), None) => Err(cause),
    }
}

/// Runs a slot's root plan and checks the system has its init. A system
/// without one takes down the block devices its plan set up (device-mapper
/// targets over its partition), so the other slot, or the next boot, finds
/// nothing of it mapped; the caller unmounts the rest.
pub(super) fn run_root_plan<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    steps: &[Step],
    init: &str,
    node: &Path,
) -> Result<(), String> {
    let sysroot = boot.roots.sysroot.clone();
    let mut outcome = executor::run(boot.sys, &sysroot, steps).map_err(|e| error_chain(&e))?;
    if !switch_root::is_executable_in(boot.sys, &sysroot, init) {
        executor::teardown(boot.sys, &mut outcome);
        return Err(format!(
            "no executable {init} in its system ({})",
            node.display()
        ));
    }
    record_mounts(&mut boot.report, &sysroot, steps);
    Ok(())
}

/// Mounts the persistent partition with its binds and machine-id. A partition
/// that is missing, does not mount or comes up read-only degrades to tmpfs and a
/// transient machine-id; a single directory or bind that fails (a planted
/// symlink, a full disk) gets a tmpfs in its place and the rest goes on.
pub(super) fn mount_persistent<S: Sys + ?Sized>(boot: &mut Boot<S>, active: Slot) {
    let slot_dir = devices::slot_dir(&boot.resolved, active);
    boot.report.handoff.slot_dir = Some(slot_dir.clone());
    let outcome = match boot.resolved.persistent.clone() {
        None => {
            let cause = format!(
                "no persistent partition {}",
                boot.config.partitions.reference("persistent")
            );
            degrade(boot, &slot_dir, kind::PERSISTENT_MISSING, cause, None)
        }
        Some(part) if boot.config.persistent.fsck && !check_persistent(boot, &part, "-p") => {
            let cause = format!(
                "persistent partition {}: the filesystem check could not repair it",
                part.node().display()
            );
            degrade(boot, &slot_dir, kind::PERSISTENT_FSCK, cause, None)
        }
        Some(part) => mount_partition(boot, &part, &slot_dir),
    };
    record_machine_id(&mut boot.report, outcome.machine_id);
}

/// The persistent partition is unusable: tmpfs in its place (and a
/// transient machine-id, seeded from `seed` when it is still readable).
fn degrade<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    slot_dir: &str,
    kind: &str,
    cause: String,
    seed: Option<&Path>,
) -> Outcome {
    let message = format!("{cause}; booting with tmpfs in its place and a transient machine-id");
    boot.report.error(kind, message);
    boot.report.handoff.persistent_degraded = true;
    let steps = plan::fallback_plan(&boot.config, &boot.roots, slot_dir, seed);
    let (outcome, failed) =
        executor::run_each(boot.sys, &boot.roots.sysroot, &steps, |_| Vec::new());
    for (_, e) in failed {
        // Even this failing leaves a bootable, read-only system.
        let message = format!("fallback: {}", error_chain(&e));
        boot.report.error(kind::FALLBACK, message);
    }
    record_mounts(&mut boot.report, &boot.roots.sysroot, &steps);
    outcome
}

/// Mounts the partition (checking and retrying once if it does not mount),
/// then its tree, binds and machine-id.
fn mount_partition<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    part: &Partition,
    slot_dir: &str,
) -> Outcome {
    let root = plan::in_sysroot(&boot.roots.sysroot, &boot.config.persistent.mountpoint);
    let steps = plan::persistent_plan(&boot.config, &boot.roots, part, slot_dir);
    let (mount, rest) = steps.split_at(1);
    let mut mounted = executor::run(boot.sys, &boot.roots.sysroot, mount);
    let repair = match &mounted {
        Err(e) => repair_unmountable(boot, part, e),
        Ok(_) => None,
    };
    if repair == Some(true) {
        mounted = executor::run(boot.sys, &boot.roots.sysroot, mount);
    }
    match mounted {
        Err(e) => {
            let cause = format!(
                "persistent partition {}: {}",
                part.node().display(),
                error_chain(&e)
            );
            degrade(boot, slot_dir, kind::PERSISTENT_MOUNT, cause, None)
        }
        Ok(_) if is_read_only(boot.sys, &root) => {
            // errors=remount-ro, or a read-only feature: keep it mounted
            // for rescue, keep the machine-id it holds, write elsewhere.
            record_mounts(&mut boot.report, &boot.roots.sysroot, mount);
            let cause = format!(
                "persistent partition {} is read-only",
                part.node().display()
            );
            degrade(
                boot,
                slot_dir,
                kind::PERSISTENT_READ_ONLY,
                cause,
                Some(&root),
            )
        }
        Ok(_) => {
            record_mounts(&mut boot.report, &boot.roots.sysroot, mount);
            mount_tree(boot, rest, slot_dir, &root)
        }
    }
}

/// The persistent tree, binds and machine-id on the mounted partition: a bind
/// that fails gets a tmpfs in its place, a machine-id that fails a transient one.
fn mount_tree<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    rest: &[Step],
    slot_dir: &str,
    root: &Path,
) -> Outcome {
    let (config, roots) = (&boot.config, &boot.roots);
    let mut replaced = Vec::new();
    let (mut outcome, failed) =
        executor::run_each(boot.sys, &roots.sysroot, rest, |step| match step {
            Step::BindBeneath { target, .. } => {
                let steps = plan::bind_fallback(config, roots, slot_dir, target);
                replaced.extend(steps.clone());
                steps
            }
            _ => Vec::new(),
        });
    let failed_steps: Vec<Step> = failed.iter().map(|(s, _)| s.clone()).collect();
    let made: Vec<Step> = rest
        .iter()
        .chain(&replaced)
        .filter(|s| !failed_steps.contains(s))
        .cloned()
        .collect();
    record_mounts(&mut boot.report, &boot.roots.sysroot, &made);
    for (step, e) in failed {
        let step_kind = match step {
            Step::MachineId { .. } => kind::MACHINE_ID,
            _ => kind::PERSISTENT_STEP,
        };
        boot.report
            .error(step_kind, format!("persistent: {}", error_chain(&e)));
        // Beneath a failed step: nothing was put in its place.
        if matches!(e, executor::StepError::Skipped { .. }) {
            continue;
        }
        match step {
            Step::BindBeneath { target, .. } => {
                boot.report.warn(
                    kind::BIND_REPLACED,
                    format!("{} is a tmpfs this boot", target.display()),
                );
            }
            Step::MachineId { .. } => {
                let steps = plan::transient_machine_id(&boot.config, &boot.roots, Some(root));
                match executor::run(boot.sys, &boot.roots.sysroot, &steps) {
                    Ok(o) => outcome.machine_id = o.machine_id,
                    Err(e) => boot
                        .report
                        .error(kind::MACHINE_ID, format!("machine-id: {}", error_chain(&e))),
                }
                boot.report.handoff.persistent_degraded = true;
            }
            _ => {}
        }
    }
    outcome
}

/// Logs the machine-id and records it with where it came from.
fn record_machine_id(report: &mut Report, outcome: Option<MachineIdOutcome>) {
    match outcome {
        Some(MachineIdOutcome::Kept(id)) => {
            let source = if report.handoff.persistent_degraded {
                "persistent-copy"
            } else {
                "persistent"
            };
            log::info!("machine-id {id} (kept, {source})");
            report.handoff.machine_id = Some(id);
            report.handoff.machine_id_source = Some(source.into());
        }
        Some(MachineIdOutcome::Generated { id, replaced }) => {
            let source = if report.handoff.persistent_degraded {
                "transient"
            } else {
                "persistent"
            };
            log::info!("machine-id {id} (generated, {source}; was {replaced})");
            report.handoff.machine_id = Some(id);
            report.handoff.machine_id_source = Some(format!("generated-{source}"));
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
pub(super) fn repair_unmountable<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    part: &Partition,
    error: &executor::StepError,
) -> Option<bool> {
    let tool = PathBuf::from(&boot.config.persistent.fsck_path);
    if boot.config.persistent.fsck || !boot.sys.exists(&tool) {
        return None;
    }
    let message = format!(
        "persistent partition {} does not mount ({}); checking it",
        part.node().display(),
        error_chain(error)
    );
    boot.report.warn(kind::PERSISTENT_REPAIR, message);
    Some(check_persistent(boot, part, "-p") || check_persistent(boot, part, "-y"))
}

/// Runs `e2fsck FLAG` (`-p` as rpi-image-gen's hooks do) on the persistent
/// partition. False when the filesystem must not be mounted (errors left, or
/// the check could not run on it); a missing checker is an error but not a
/// reason to stop.
pub(super) fn check_persistent<S: Sys + ?Sized>(
    boot: &mut Boot<S>,
    part: &Partition,
    flag: &str,
) -> bool {
    let tool = &boot.config.persistent.fsck_path;
    let node = part.node();
    let args = [OsStr::new(flag), node.as_os_str()];
    // A check of a large partition may outlast the watchdog's timeout: fed
    // while the checker works (kernel::sys::Sys::watchdog_run).
    let status = match &boot.watchdog {
        Some(w) => w.run(boot.sys, tool, &args),
        None => boot.sys.run(tool, &args),
    };
    let (ok, text) = match status {
        Err(e) => (
            true,
            format!("{tool} could not run: {e}; mounting unchecked"),
        ),
        Ok(code) => match code {
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
    boot.report.handoff.fsck = Some(text);
    ok
}

/// What an e2fsck exit code means (e2fsck(8): bits).
pub(super) fn fsck_verdict(code: i32) -> &'static str {
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
pub(super) fn is_read_only<S: Sys + ?Sized>(sys: &mut S, path: &Path) -> bool {
    sys.is_read_only(path).unwrap_or(false)
}

/// Unmounts what a slot's root plan mounted: the sysroot and, for overlays,
/// the lower system and the tmpfs uppers under /run.
pub(super) fn unmount_root<S: Sys + ?Sized>(boot: &mut Boot<S>) {
    let roots = &boot.roots;
    let (sysroot, lower, overlay) = (
        roots.sysroot.clone(),
        roots.run_dir.join("lower"),
        roots.run_dir.join("overlay"),
    );
    unmount_beneath(boot.sys, &[&sysroot, &lower, &overlay]);
}

/// Unmounts everything at or below any of `roots`, deepest (latest) first.
pub(super) fn unmount_beneath<S: Sys + ?Sized>(sys: &mut S, roots: &[&Path]) {
    let Some(text) = sys
        .read_file(Path::new("/proc/self/mountinfo"))
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return;
    };
    let mut points: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| roots.iter().any(|r| Path::new(p).starts_with(r)))
        .collect();
    points.reverse();
    for p in points {
        if let Err(e) = sys.umount(Path::new(p), MntFlags::MNT_DETACH) {
            log::warn!("cannot unmount {p}: {e}");
        }
    }
}

pub(super) fn record_mounts(report: &mut Report, sysroot: &Path, steps: &[Step]) {
    // Paths as the booted system sees them: the sysroot becomes `/`, and what
    // is outside it (/run, moved along) keeps its path.
    let seen = |path: &Path| match path.strip_prefix(sysroot) {
        Ok(rest) => Path::new("/").join(rest).display().to_string(),
        Err(_) => path.display().to_string(),
    };
    for step in steps {
        let record = match step {
            Step::Mount {
                source,
                target,
                fstype,
                readonly,
                options,
            } => MountRecord {
                what: source.clone(),
                target: seen(target),
                fstype: fstype.clone(),
                options: format!(
                    "{}{}{options}",
                    if *readonly { "ro" } else { "rw" },
                    if options.is_empty() { "" } else { "," }
                ),
            },
            Step::BindBeneath {
                root, path, target, ..
            } => MountRecord {
                what: seen(&root.join(path)),
                target: seen(target),
                fstype: "none".into(),
                options: "bind".into(),
            },
            _ => continue,
        };
        report.handoff.mounts.push(record);
    }
}
