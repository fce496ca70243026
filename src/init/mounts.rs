//! The mount stages: the slot's system at the sysroot, then the persistent
//! partition with its binds and machine-id, degrading to tmpfs where it must.

use super::report::{kind, Report};
use crate::config::Config;
use crate::disk::devices::{self, Resolved};
use crate::kernel::switch_root;
use crate::kernel::sys::Real;
use crate::mount::executor::{self, MachineIdOutcome};
use crate::mount::plan::{self, Roots, Step};
use crate::types::error_chain;
use crate::types::Slot;
use std::path::Path;

/// Mounts the slot's system read-only at the sysroot and checks it has an init.
pub(super) fn mount_root(
    config: &Config,
    roots: &Roots,
    resolved: &Resolved,
    slot: Slot,
    init: &str,
    report: &mut Report,
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
    record_mounts(report, &steps);
    Ok(())
}

/// Mounts the persistent partition with its binds and machine-id. A partition
/// that is missing, does not mount or comes up read-only degrades to tmpfs and a
/// transient machine-id; a single directory or bind that fails (a planted
/// symlink, a full disk) gets a tmpfs in its place and the rest goes on.
pub(super) fn mount_persistent(
    config: &Config,
    roots: &Roots,
    resolved: &Resolved,
    active: Slot,
    report: &mut Report,
) {
    let mut sys = Real;
    let slot_dir = devices::slot_dir(resolved, active);
    report.handoff.slot_dir = Some(slot_dir.clone());
    let root = plan::in_sysroot(&roots.sysroot, &config.persistent.mountpoint);
    let degrade = |kind: &str, cause: String, seed: Option<&Path>, report: &mut Report| {
        let message =
            format!("{cause}; booting with tmpfs in its place and a transient machine-id");
        report.error(kind, message);
        report.handoff.persistent_degraded = true;
        let steps = plan::fallback_plan(config, roots, &slot_dir, seed);
        let (outcome, failed) =
            executor::run_each(&mut Real, &roots.sysroot, &steps, |_| Vec::new());
        for (_, e) in failed {
            // Even this failing leaves a bootable, read-only system.
            let message = format!("fallback: {}", error_chain(&e));
            report.error(kind::FALLBACK, message);
        }
        record_mounts(report, &steps);
        outcome
    };
    let outcome = match &resolved.persistent {
        None => degrade(
            kind::PERSISTENT_MISSING,
            format!(
                "no persistent partition {}",
                config.partitions.reference("persistent")
            ),
            None,
            report,
        ),
        Some(part) if config.persistent.fsck && !check_persistent(config, part, "-p", report) => {
            degrade(
                kind::PERSISTENT_FSCK,
                format!(
                    "persistent partition {}: the filesystem check could not repair it",
                    part.node().display()
                ),
                None,
                report,
            )
        }
        Some(part) => {
            let steps = plan::persistent_plan(config, roots, part, &slot_dir);
            let (mount, rest) = steps.split_at(1);
            let mut mounted = executor::run(&mut sys, &roots.sysroot, mount);
            let repair = match &mounted {
                Err(e) => repair_unmountable(config, part, e, report),
                Ok(_) => None,
            };
            if repair == Some(true) {
                mounted = executor::run(&mut sys, &roots.sysroot, mount);
            }
            match mounted {
                Err(e) => degrade(
                    kind::PERSISTENT_MOUNT,
                    format!(
                        "persistent partition {}: {}",
                        part.node().display(),
                        error_chain(&e)
                    ),
                    None,
                    report,
                ),
                Ok(_) if is_read_only(&root) => {
                    // errors=remount-ro, or a read-only feature: keep it mounted
                    // for rescue, keep the machine-id it holds, write elsewhere.
                    record_mounts(report, mount);
                    degrade(
                        kind::PERSISTENT_READ_ONLY,
                        format!(
                            "persistent partition {} is read-only",
                            part.node().display()
                        ),
                        Some(&root),
                        report,
                    )
                }
                Ok(_) => {
                    record_mounts(report, mount);
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
                        report,
                        &rest
                            .iter()
                            .chain(&replaced)
                            .filter(|s| !failed_steps.contains(s))
                            .cloned()
                            .collect::<Vec<_>>(),
                    );
                    for (step, e) in failed {
                        let step_kind = match step {
                            Step::MachineId { .. } => kind::MACHINE_ID,
                            _ => kind::PERSISTENT_STEP,
                        };
                        report.error(step_kind, format!("persistent: {}", error_chain(&e)));
                        // Beneath a failed step: nothing was put in its place.
                        if matches!(e, executor::StepError::Skipped { .. }) {
                            continue;
                        }
                        match step {
                            Step::BindBeneath { target, .. } => {
                                report.warn(
                                    kind::BIND_REPLACED,
                                    format!("{} is a tmpfs this boot", target.display()),
                                );
                            }
                            Step::MachineId { .. } => {
                                let steps = plan::transient_machine_id(config, roots, Some(&root));
                                match executor::run(&mut sys, &roots.sysroot, &steps) {
                                    Ok(o) => outcome.machine_id = o.machine_id,
                                    Err(e) => report.error(
                                        kind::MACHINE_ID,
                                        format!("machine-id: {}", error_chain(&e)),
                                    ),
                                }
                                report.handoff.persistent_degraded = true;
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
pub(super) fn repair_unmountable(
    config: &Config,
    part: &crate::disk::devices::Partition,
    error: &executor::StepError,
    report: &mut Report,
) -> Option<bool> {
    if config.persistent.fsck || !Path::new(&config.persistent.fsck_path).exists() {
        return None;
    }
    let message = format!(
        "persistent partition {} does not mount ({}); checking it",
        part.node().display(),
        error_chain(error)
    );
    report.warn(kind::PERSISTENT_REPAIR, message);
    Some(
        check_persistent(config, part, "-p", report)
            || check_persistent(config, part, "-y", report),
    )
}

/// Runs `e2fsck FLAG` (`-p` as rpi-image-gen's hooks do) on the persistent
/// partition. False when the filesystem must not be mounted (errors left, or
/// the check could not run on it); a missing checker is an error but not a
/// reason to stop.
pub(super) fn check_persistent(
    config: &Config,
    part: &crate::disk::devices::Partition,
    flag: &str,
    report: &mut Report,
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
    report.handoff.fsck = Some(text);
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
pub(super) fn is_read_only(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Unmounts everything at or below any of `roots`, deepest (latest) first.
pub(super) fn unmount_beneath(roots: &[&Path]) {
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

pub(super) fn record_mounts(report: &mut Report, steps: &[Step]) {
    for step in steps {
        match step {
            Step::Mount {
                source,
                target,
                fstype,
                readonly,
                options,
            } => report.handoff.mounts.push(format!(
                "{source} {} {fstype} {}{}{options}",
                target.display(),
                if *readonly { "ro" } else { "rw" },
                if options.is_empty() { "" } else { "," }
            )),
            Step::BindBeneath {
                root, path, target, ..
            } => report.handoff.mounts.push(format!(
                "{} {} bind",
                root.join(path).display(),
                target.display()
            )),
            _ => {}
        }
    }
}
