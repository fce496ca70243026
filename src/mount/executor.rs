//! Executor: runs a mount plan's steps through [`Sys`], the only path by which the
//! plan reaches the kernel.

use crate::kernel::sys::{Ids, Sys};
use crate::mount::machine_id;
use crate::mount::plan::mapped_node;
use crate::mount::plan::{MachineIdStore, Step};
use nix::mount::{MntFlags, MsFlags};
use std::io;
use std::path::{Path, PathBuf};

/// A step that failed, with the path it was working on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    #[error("mount {source} on {target} ({fstype}) failed")]
    Mount {
        source: String,
        target: PathBuf,
        fstype: String,
        #[source]
        error: io::Error,
    },
    #[error("cannot create directory {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("cannot bind {source} onto {target}")]
    Bind {
        source: PathBuf,
        target: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("cannot set up device-mapper target {name} over {device}")]
    DeviceMapper {
        name: String,
        device: PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("machine-id in {store}")]
    MachineId {
        store: PathBuf,
        #[source]
        error: io::Error,
    },
    /// Not run: its path lies at or beneath `under`, a mount that failed with
    /// nothing in its place, so the path no longer means what the plan meant.
    #[error("skipped {path}: it lies at or beneath {under}, which could not be mounted")]
    Skipped { path: PathBuf, under: PathBuf },
}

/// What the machine-id step did, for the log and the handoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MachineIdOutcome {
    Kept(String),
    /// A new id was generated; `replaced` says what was there (absent, garbage).
    Generated {
        id: String,
        replaced: String,
    },
}

/// The result of running a plan: what the machine-id step did, if it ran, and
/// the device-mapper targets it set up.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub(crate) machine_id: Option<MachineIdOutcome>,
    /// (name, node) of each device-mapper target set up, in order.
    mapped: Vec<(String, PathBuf)>,
    /// What to undo should a later step fail, in the order it was done.
    undo: Vec<Undo>,
}

/// Block-device setup a failed plan takes down again.
#[derive(Debug)]
enum Undo {
    /// A device-mapper target.
    Mapped(String),
    /// A mount of a mapped device: it holds the target open.
    MountedMapped(PathBuf),
}

/// Runs the plan's steps in order and stops at the first failure: a later step
/// builds on the earlier ones. The block devices the run set up (device-mapper
/// targets, and its mounts of them) are taken down again, last first, so a
/// failed plan leaves no mapping behind for the next try.
pub(crate) fn run<S: Sys + ?Sized>(
    sys: &mut S,
    sysroot: &Path,
    steps: &[Step],
) -> Result<Outcome, StepError> {
    let mut outcome = Outcome::default();
    for step in steps {
        if let Err(e) = run_step(sys, sysroot, step, &mut outcome) {
            teardown(sys, &mut outcome);
            return Err(e);
        }
    }
    Ok(outcome)
}

/// Undoes the block-device setup of `outcome`, last first; what cannot be
/// undone is logged (the boot goes on to its fallback either way).
pub(crate) fn teardown<S: Sys + ?Sized>(sys: &mut S, outcome: &mut Outcome) {
    while let Some(undo) = outcome.undo.pop() {
        let result = match &undo {
            Undo::MountedMapped(target) => sys.umount(target, MntFlags::empty()),
            Undo::Mapped(name) => {
                outcome.mapped.retain(|(n, _)| n != name);
                sys.dm_remove(name)
            }
        };
        if let Err(e) = result {
            log::warn!("cannot undo {undo:?}: {e}");
        }
    }
}

/// Runs every step, going on after a failure; returns the failures with the
/// steps that failed, for the caller to put a fallback in their place.
///
/// `replace` gives the steps to run at once in place of a failed one (a tmpfs
/// for a bind, so that later steps nested in it still find their directories);
/// they run in order and stop at their first failure, as they build on each
/// other. A mount or bind that failed with no replacement in its place leaves
/// its target as whatever was beneath it: every later step at or beneath that
/// target is skipped (and reported), not run in a tree the plan did not mean.
/// Steps beneath a replacement that worked do run: a failed `/var` bind becomes
/// a tmpfs with `/var/log/journal` in it, and the journal's own bind still
/// brings the persistent journal there.
pub(crate) fn run_each<S: Sys + ?Sized>(
    sys: &mut S,
    sysroot: &Path,
    steps: &[Step],
    mut replace: impl FnMut(&Step) -> Vec<Step>,
) -> (Outcome, Vec<(Step, StepError)>) {
    let mut outcome = Outcome::default();
    let mut failed = Vec::new();
    let mut broken: Vec<PathBuf> = Vec::new();
    for step in steps {
        let path = step_path(step);
        if let Some(under) = path.and_then(|p| broken.iter().find(|b| p.starts_with(b))) {
            let error = StepError::Skipped {
                path: path.unwrap_or(under).to_path_buf(),
                under: under.clone(),
            };
            log::warn!("{error}");
            failed.push((step.clone(), error));
            continue;
        }
        if let Err(e) = run_step(sys, sysroot, step, &mut outcome) {
            let replacement = replace(step);
            let mut replaced = !replacement.is_empty();
            for r in replacement {
                if let Err(e) = run_step(sys, sysroot, &r, &mut outcome) {
                    failed.push((r, e));
                    replaced = false;
                    break;
                }
            }
            if !replaced {
                if let Step::Mount { target, .. } | Step::BindBeneath { target, .. } = step {
                    broken.push(target.clone());
                }
            }
            failed.push((step.clone(), e));
        }
    }
    (outcome, failed)
}

/// The path a step works on in the system's tree, if it has one.
fn step_path(step: &Step) -> Option<&Path> {
    match step {
        Step::Mount { target, .. }
        | Step::BindBeneath { target, .. }
        | Step::MachineId { target, .. } => Some(target),
        Step::Mkdir { path, .. } => Some(path),
        Step::DirBeneath { .. } | Step::DeviceMapper { .. } => None,
    }
}

fn run_step<S: Sys + ?Sized>(
    sys: &mut S,
    sysroot: &Path,
    step: &Step,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    match step {
        Step::Mount { .. } => mount_step(sys, step, outcome),
        Step::DeviceMapper { .. } => device_mapper_step(sys, step, outcome),
        Step::Mkdir { path, mode } => sys.mkdir(path, *mode).map_err(|error| StepError::Mkdir {
            path: path.clone(),
            error,
        }),
        Step::DirBeneath {
            root,
            path,
            mode,
            group,
            owner,
        } => {
            let ids = Ids {
                uid: owner
                    .as_ref()
                    .and_then(|n| lookup_id(sys, sysroot, "etc/passwd", n)),
                gid: group
                    .as_ref()
                    .and_then(|n| lookup_id(sys, sysroot, "etc/group", n)),
            };
            sys.dir_beneath(root, path, *mode, ids)
                .map(drop)
                .map_err(|error| StepError::Mkdir {
                    path: root.join(path),
                    error,
                })
        }
        Step::BindBeneath {
            root,
            path,
            target,
            optional,
        } => match sys.bind_beneath(root, path, target) {
            Err(e) if *optional && e.kind() == io::ErrorKind::NotFound => {
                log::warn!(
                    "{} does not exist; not binding it onto {} (create = false)",
                    root.join(path).display(),
                    target.display()
                );
                Ok(())
            }
            result => result.map_err(|error| StepError::Bind {
                source: root.join(path),
                target: target.clone(),
                error,
            }),
        },
        Step::MachineId { store, target } => {
            let result = machine_id_step(sys, store, target)?;
            outcome.machine_id = Some(result);
            Ok(())
        }
    }
}

/// A [`Step::Mount`]; a mapped device is mounted by the node its setup returned.
fn mount_step<S: Sys + ?Sized>(
    sys: &mut S,
    step: &Step,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Step::Mount {
        source,
        target,
        fstype,
        readonly,
        options,
    } = step
    else {
        return Ok(());
    };
    let (mut flags, data) = split_options(MsFlags::empty(), options);
    // A read-only step stays read-only whatever its options say ("rw").
    if *readonly {
        flags |= MsFlags::MS_RDONLY;
    }
    let mapped = outcome
        .mapped
        .iter()
        .find(|(name, _)| mapped_node(name) == *source)
        .map(|(_, node)| node.to_string_lossy().into_owned());
    let device = mapped.as_deref().unwrap_or(source);
    sys.mount(device, target, fstype, flags, &data)
        .map_err(|error| StepError::Mount {
            source: device.to_string(),
            target: target.clone(),
            fstype: fstype.clone(),
            error,
        })?;
    if mapped.is_some() {
        outcome.undo.push(Undo::MountedMapped(target.clone()));
    }
    Ok(())
}

/// A [`Step::DeviceMapper`]: the target is set up and remembered for the
/// mounts after it and for the teardown.
fn device_mapper_step<S: Sys + ?Sized>(
    sys: &mut S,
    step: &Step,
    outcome: &mut Outcome,
) -> Result<(), StepError> {
    let Step::DeviceMapper {
        name,
        device,
        readonly,
        table,
    } = step
    else {
        return Ok(());
    };
    // A target stacked on another (verity over crypt) names it by the node
    // its setup returned.
    let table: Vec<_> = table
        .iter()
        .map(|line| {
            let mut line = line.clone();
            for (below, node) in &outcome.mapped {
                let node = node.to_string_lossy();
                line.params = line.params.replace(&mapped_node(below), &node);
            }
            line
        })
        .collect();
    let node = sys
        .dm_create(name, *readonly, &table)
        .map_err(|error| StepError::DeviceMapper {
            name: name.clone(),
            device: device.clone(),
            error,
        })?;
    log::info!("{} mapped as {name} ({})", device.display(), node.display());
    outcome.mapped.push((name.clone(), node));
    outcome.undo.push(Undo::Mapped(name.clone()));
    Ok(())
}

/// Keeps a valid stored id, otherwise generates one and stores it before binding
/// it over the system's file, so the id the system sees is already durable.
fn machine_id_step<S: Sys + ?Sized>(
    sys: &mut S,
    store: &MachineIdStore,
    target: &Path,
) -> Result<MachineIdOutcome, StepError> {
    let (root, path) = store_file(store);
    let err = |error| StepError::MachineId {
        store: root.join(&path),
        error,
    };
    let mut seeded = None;
    if let MachineIdStore::Transient { seed, .. } = store {
        sys.mkdir(&root, 0o755).map_err(err)?;
        if let Some((seed_root, seed_path)) = seed {
            seeded = sys
                .read_beneath(seed_root, seed_path, 128)
                .ok()
                .flatten()
                .and_then(|bytes| machine_id::parse(&bytes));
        }
    }
    let current = stored_id(sys, &root, &path).map_err(err)?;
    let outcome = match (current, seeded) {
        (Ok(id), _) => MachineIdOutcome::Kept(id),
        (Err(_), Some(id)) => {
            sys.write_beneath(&root, &path, &machine_id::file_bytes(&id), 0o444)
                .map_err(err)?;
            MachineIdOutcome::Kept(id)
        }
        (Err(replaced), None) => {
            let id = machine_id::from_random(sys.random().map_err(err)?);
            if let Some(dir) = Path::new(&path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                sys.dir_beneath(&root, &dir.to_string_lossy(), 0o755, Ids::default())
                    .map_err(err)?;
            }
            sys.write_beneath(&root, &path, &machine_id::file_bytes(&id), 0o444)
                .map_err(err)?;
            MachineIdOutcome::Generated { id, replaced }
        }
    };
    sys.bind_beneath(&root, &path, target)
        .map_err(|error| StepError::Bind {
            source: root.join(&path),
            target: target.to_path_buf(),
            error,
        })?;
    Ok(outcome)
}

/// The directory and file name of a machine-id store.
fn store_file(store: &MachineIdStore) -> (PathBuf, String) {
    match store {
        MachineIdStore::Persistent { root, path } => (root.clone(), path.clone()),
        MachineIdStore::Transient { path, .. } => {
            let parent = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (parent, name)
        }
    }
}

/// The id a store holds (normalised on disk when it was spelt otherwise), or
/// what stands there instead (absent, garbage, unusable).
fn stored_id<S: Sys + ?Sized>(
    sys: &mut S,
    root: &Path,
    path: &str,
) -> io::Result<Result<String, String>> {
    Ok(match sys.read_beneath(root, path, 128) {
        Ok(Some(bytes)) => match machine_id::parse(&bytes) {
            Some(id) => {
                // Uppercase or a CRLF: the same id, rewritten the way systemd
                // reads it (durably, before the bind), so the device keeps it.
                if bytes != machine_id::file_bytes(&id) {
                    log::info!(
                        "machine-id {id} in {} normalised (was {:?})",
                        root.join(path).display(),
                        String::from_utf8_lossy(&bytes)
                    );
                    sys.write_beneath(root, path, &machine_id::file_bytes(&id), 0o444)?;
                }
                Ok(id)
            }
            None => Err(format!("garbage ({} bytes)", bytes.len())),
        },
        Ok(None) => Err("absent".to_string()),
        // A symlink or a directory planted in its place: not an id. Writing the
        // new id replaces a symlink itself; a directory makes the write fail below.
        Err(e) => Err(format!("unusable ({e})")),
    })
}

/// Splits fstab-style options into mount flags and the filesystem's data string.
fn split_options(mut flags: MsFlags, options: &str) -> (MsFlags, String) {
    let mut data = Vec::new();
    for opt in options.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "lazytime" => flags |= MsFlags::MS_LAZYTIME,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "defaults" => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// The id of `name` in the system's passwd or group file (or `name` itself when
/// numeric); None (root) when it is not there.
fn lookup_id<S: Sys + ?Sized>(sys: &mut S, sysroot: &Path, file: &str, name: &str) -> Option<u32> {
    if let Ok(id) = name.parse() {
        return Some(id);
    }
    let text = sys.read_file(&sysroot.join(file)).ok()??;
    let id = parse_id(&String::from_utf8_lossy(&text), name);
    if id.is_none() {
        log::info!("{name:?} not in the system's /{file}; using root");
    }
    id
}

/// Finds `name` in passwd(5) or group(5) text: both keep the id in field 3.
fn parse_id(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::disk::devices::Partition;
    use crate::kernel::fake::Fake;
    use crate::mount::plan::{fallback_plan, persistent_plan, root_plan, Roots};

    fn part(dev: &str) -> Partition {
        crate::disk::devices::fixtures::part(dev, "vda", 1, None)
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn rpi_boot_sequence() {
        let config = Config::default();
        let roots = Roots::default();
        let mut sys = Fake::default();
        sys.files.insert(
            "/sysroot/etc/group".into(),
            b"root:x:0:\nsystemd-journal:x:101:\n".to_vec(),
        );
        sys.files.insert(
            "/sysroot/persistent/common/etc/machine-id".into(),
            format!("{ID}\n").into_bytes(),
        );
        let mut steps = root_plan(&config, &roots, &part("vda4"));
        steps.extend(persistent_plan(&config, &roots, &part("vda6"), "system_a"));
        let out = run(&mut sys, &roots.sysroot, &steps).unwrap();
        assert_eq!(out.machine_id, Some(MachineIdOutcome::Kept(ID.into())));
        let p = "/sysroot/persistent";
        let expect: Vec<String> = [
            "mount /dev/vda4 /sysroot ext4 ro ".to_string(),
            format!("mount /dev/vda6 {p} ext4 rw,nosuid,nodev commit=60,errors=remount-ro"),
            format!("dir {p}/slots 755 None"),
            format!("dir {p}/slots/system_a 755 None"),
            format!("dir {p}/slots/system_a/var 755 None"),
            format!("dir {p}/slots/system_a/var/tmp 1777 None"),
            format!("dir {p}/slots/system_a/var/log 755 None"),
            format!("dir {p}/slots/system_a/var/log/journal 755 None"),
            format!("dir {p}/home 755 None"),
            format!("dir {p}/log 755 None"),
            // The group's id, from the system's own /etc/group.
            "read-file /sysroot/etc/group".to_string(),
            format!("dir {p}/log/journal 2755 Some(101)"),
            format!("dir {p}/common 755 None"),
            format!("dir {p}/common/etc 755 None"),
            format!("bind {p}/slots/system_a/var /sysroot/var"),
            format!("bind {p}/home /sysroot/home"),
            format!("bind {p}/log/journal /sysroot/var/log/journal"),
            format!("read {p}/common/etc/machine-id"),
            format!("bind {p}/common/etc/machine-id /sysroot/etc/machine-id"),
        ]
        .into();
        assert_eq!(sys.calls, expect);
    }

    fn linear(name: &str, device: &str) -> Step {
        Step::DeviceMapper {
            name: name.into(),
            device: device.into(),
            readonly: true,
            table: vec![crate::kernel::sys::DmLine {
                start: 0,
                length: 2048,
                target: "linear".into(),
                params: format!("{device} 0"),
            }],
        }
    }

    fn mount(source: &str, target: &str) -> Step {
        Step::Mount {
            source: source.into(),
            target: target.into(),
            fstype: "ext4".into(),
            readonly: true,
            options: String::new(),
        }
    }

    #[test]
    fn a_mapped_device_is_set_up_then_mounted_in_the_partitions_place() {
        let config = Config::default();
        let roots = Roots::default();
        let steps = crate::mount::plan::map_device(
            root_plan(&config, &roots, &part("vda4")),
            "root",
            Path::new("/dev/vda4"),
            true,
            vec![crate::kernel::sys::DmLine {
                start: 0,
                length: 2048,
                target: "linear".into(),
                params: "/dev/vda4 0".into(),
            }],
        );
        let mut sys = Fake::default();
        let out = run(&mut sys, &roots.sysroot, &steps).unwrap();
        assert_eq!(
            sys.calls,
            [
                "dm-create root ro 0 2048 linear /dev/vda4 0",
                "mount /dev/dm-0 /sysroot ext4 ro ",
            ]
        );
        assert_eq!(
            out.mapped,
            [("root".to_string(), PathBuf::from("/dev/dm-0"))]
        );
        assert_eq!(sys.mapped.len(), 1, "left in place when the plan worked");
    }

    #[test]
    fn a_failed_later_step_takes_the_mapped_devices_down_last_first() {
        let steps = [
            linear("lower", "/dev/vda4"),
            linear("upper", "/dev/mapper/lower"),
            mount("/dev/mapper/upper", "/sysroot"),
            mount("/dev/vda6", "/sysroot/persistent"),
        ];
        let mut sys = Fake {
            fail: vec!["mount /dev/vda6".into()],
            ..Fake::default()
        };
        let err = run(&mut sys, Path::new("/sysroot"), &steps).unwrap_err();
        assert!(matches!(err, StepError::Mount { .. }), "{err}");
        assert_eq!(
            sys.calls,
            [
                "dm-create lower ro 0 2048 linear /dev/vda4 0",
                // Stacked: the lower target by its node.
                "dm-create upper ro 0 2048 linear /dev/dm-0 0",
                "mount /dev/dm-1 /sysroot ext4 ro ",
                "mount /dev/vda6 /sysroot/persistent ext4 ro ",
                "umount /sysroot",
                "dm-remove upper",
                "dm-remove lower",
            ]
        );
        assert!(sys.mapped.is_empty());
        // A target that cannot be made: the one before it goes, nothing is mounted.
        let mut sys = Fake {
            errno: vec![("dm-create upper".into(), libc::EINVAL)],
            ..Fake::default()
        };
        let err = run(&mut sys, Path::new("/sysroot"), &steps).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot set up device-mapper target upper over /dev/mapper/lower"
        );
        assert_eq!(
            sys.calls,
            [
                "dm-create lower ro 0 2048 linear /dev/vda4 0",
                "dm-create upper ro 0 2048 linear /dev/dm-0 0",
                "dm-remove lower",
            ]
        );
        // A teardown that fails goes on with the rest.
        let mut sys = Fake {
            fail: vec!["mount /dev/vda6".into(), "umount /sysroot".into()],
            ..Fake::default()
        };
        run(&mut sys, Path::new("/sysroot"), &steps).unwrap_err();
        assert_eq!(
            sys.calls[4..],
            ["umount /sysroot", "dm-remove upper", "dm-remove lower"]
        );
    }

    #[test]
    fn noatime_and_lazytime_are_flags_not_data() {
        let (flags, data) = split_options(MsFlags::empty(), "noatime,lazytime,commit=60,ro");
        assert!(flags.contains(MsFlags::MS_NOATIME | MsFlags::MS_LAZYTIME | MsFlags::MS_RDONLY));
        assert_eq!(data, "commit=60");
    }

    #[test]
    fn garbage_machine_id_is_replaced_durably_before_the_bind() {
        for stored in [Some(&b"garbage\n"[..]), Some(&b""[..]), None] {
            let mut sys = Fake::default();
            let root = PathBuf::from("/p");
            if let Some(bytes) = stored {
                sys.files
                    .insert(root.join("common/etc/machine-id"), bytes.to_vec());
            }
            let step = Step::MachineId {
                store: MachineIdStore::Persistent {
                    root: root.clone(),
                    path: "common/etc/machine-id".into(),
                },
                target: "/sysroot/etc/machine-id".into(),
            };
            let out = run(&mut sys, Path::new("/sysroot"), &[step]).unwrap();
            let Some(MachineIdOutcome::Generated { id, .. }) = out.machine_id else {
                panic!("{:?}", out.machine_id);
            };
            assert_eq!(machine_id::parse(id.as_bytes()), Some(id.clone()));
            assert_eq!(
                sys.files[&root.join("common/etc/machine-id")],
                format!("{id}\n").into_bytes()
            );
            let write = sys
                .calls
                .iter()
                .position(|c| c.starts_with("write"))
                .unwrap();
            let bind = sys
                .calls
                .iter()
                .position(|c| c.starts_with("bind"))
                .unwrap();
            assert!(write < bind, "{:?}", sys.calls);
        }
    }

    #[test]
    fn a_failed_step_stops_the_plan_and_names_the_path() {
        let config = Config::default();
        let roots = Roots::default();
        let mut sys = Fake {
            fail: vec!["bind /sysroot/persistent/home".into()],
            ..Fake::default()
        };
        let steps = persistent_plan(&config, &roots, &part("vda6"), "system_a");
        let err = run(&mut sys, &roots.sysroot, &steps).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot bind /sysroot/persistent/home onto /sysroot/home"
        );
        assert!(sys
            .calls
            .last()
            .unwrap()
            .starts_with("bind /sysroot/persistent/home"));
    }

    #[test]
    fn fallback_sequence() {
        let config = Config::default();
        let roots = Roots::default();
        let mut sys = Fake::default();
        let out = run(
            &mut sys,
            &roots.sysroot,
            &fallback_plan(&config, &roots, "system_a", None),
        )
        .unwrap();
        assert!(matches!(
            out.machine_id,
            Some(MachineIdOutcome::Generated { .. })
        ));
        assert_eq!(
            sys.calls[0],
            "mount tmpfs /sysroot/var tmpfs rw,nosuid,nodev mode=0755"
        );
        assert_eq!(
            sys.calls[1],
            "mount tmpfs /sysroot/home tmpfs rw,nosuid,nodev mode=0755"
        );
        assert!(sys
            .calls
            .contains(&"mkdir /sysroot/var/tmp 1777".to_string()));
        assert!(sys
            .calls
            .contains(&"write /run/slotinit/machine-id 444".to_string()));
        assert_eq!(
            sys.calls.last().unwrap(),
            "bind /run/slotinit/machine-id /sysroot/etc/machine-id"
        );
    }

    #[test]
    fn transient_id_copies_a_valid_seed() {
        let mut sys = Fake::default();
        sys.files.insert(
            "/p/common/etc/machine-id".into(),
            format!("{ID}\n").into_bytes(),
        );
        let step = Step::MachineId {
            store: MachineIdStore::Transient {
                path: "/run/slotinit/machine-id".into(),
                seed: Some(("/p".into(), "common/etc/machine-id".into())),
            },
            target: "/sysroot/etc/machine-id".into(),
        };
        let out = run(&mut sys, Path::new("/sysroot"), &[step]).unwrap();
        assert_eq!(out.machine_id, Some(MachineIdOutcome::Kept(ID.into())));
        assert_eq!(
            sys.files[Path::new("/run/slotinit/machine-id")],
            format!("{ID}\n").into_bytes()
        );
        assert!(
            !sys.calls.iter().any(|c| c.starts_with("write /p")),
            "the seed is only read"
        );
    }

    #[test]
    fn run_each_goes_on_after_a_failure() {
        let config = Config::default();
        let roots = Roots::default();
        let mut sys = Fake {
            fail: vec!["dir /sysroot/persistent/home".into()],
            ..Fake::default()
        };
        let steps = persistent_plan(&config, &roots, &part("vda6"), "system_a");
        let (out, failed) = run_each(&mut sys, &roots.sysroot, &steps, |_| Vec::new());
        assert_eq!(failed.len(), 1);
        assert!(matches!(&failed[0].0, Step::DirBeneath { path, .. } if path == "home"));
        assert!(sys
            .calls
            .iter()
            .any(|c| c == "bind /sysroot/persistent/log/journal /sysroot/var/log/journal"));
        assert!(out.machine_id.is_some(), "later steps still ran");
    }

    #[test]
    fn the_system_mounts_read_only_even_with_rw() {
        // check-config rejects `rw`; the executor holds even without it.
        let mut config = Config::default();
        config.system.options = "rw,noatime".into();
        let mut sys = Fake::default();
        run(
            &mut sys,
            Path::new("/sysroot"),
            &root_plan(&config, &Roots::default(), &part("vda4")),
        )
        .unwrap();
        assert_eq!(sys.calls, ["mount /dev/vda4 /sysroot ext4 ro "]);
        // The executor holds to `readonly` whatever the options say.
        let step = Step::Mount {
            source: "/dev/vda4".into(),
            target: "/sysroot".into(),
            fstype: "ext4".into(),
            readonly: true,
            options: "rw".into(),
        };
        let mut sys = Fake::default();
        run(&mut sys, Path::new("/sysroot"), &[step]).unwrap();
        assert_eq!(sys.calls, ["mount /dev/vda4 /sysroot ext4 ro "]);
    }

    #[test]
    fn uppercase_or_crlf_machine_id_is_kept_and_normalised() {
        let upper = ID.to_ascii_uppercase();
        for stored in [
            format!("{upper}\n"),
            format!("{ID}\r\n"),
            format!("{upper}\r\n"),
            ID.to_string(),
        ] {
            let mut sys = Fake::default();
            let file = PathBuf::from("/p/common/etc/machine-id");
            sys.files.insert(file.clone(), stored.clone().into_bytes());
            let step = Step::MachineId {
                store: MachineIdStore::Persistent {
                    root: "/p".into(),
                    path: "common/etc/machine-id".into(),
                },
                target: "/sysroot/etc/machine-id".into(),
            };
            let out = run(&mut sys, Path::new("/sysroot"), &[step]).unwrap();
            assert_eq!(
                out.machine_id,
                Some(MachineIdOutcome::Kept(ID.into())),
                "{stored:?}"
            );
            assert_eq!(sys.files[&file], format!("{ID}\n").into_bytes());
            assert_eq!(
                sys.calls,
                [
                    "read /p/common/etc/machine-id",
                    "write /p/common/etc/machine-id 444",
                    "bind /p/common/etc/machine-id /sysroot/etc/machine-id",
                ],
                "rewritten before the bind"
            );
        }
        // Already canonical: only read.
        let mut sys = Fake::default();
        sys.files.insert(
            "/p/common/etc/machine-id".into(),
            format!("{ID}\n").into_bytes(),
        );
        let step = Step::MachineId {
            store: MachineIdStore::Persistent {
                root: "/p".into(),
                path: "common/etc/machine-id".into(),
            },
            target: "/sysroot/etc/machine-id".into(),
        };
        run(&mut sys, Path::new("/sysroot"), &[step]).unwrap();
        assert!(!sys.calls.iter().any(|c| c.starts_with("write")));
    }

    #[test]
    fn steps_beneath_a_failed_mount_are_skipped() {
        let config = Config::default();
        let roots = Roots::default();
        let steps = persistent_plan(&config, &roots, &part("vda6"), "system_a");
        let replace = |step: &Step| match step {
            Step::BindBeneath { target, .. } => {
                crate::mount::plan::bind_fallback(&config, &roots, "system_a", target)
            }
            _ => Vec::new(),
        };
        // The /var bind fails and so does the tmpfs in its place: /sysroot/var is
        // the system's own, and the journal bind beneath it is not made.
        let mut sys = Fake {
            fail: vec![
                "bind /sysroot/persistent/slots/system_a/var".into(),
                "mount tmpfs /sysroot/var ".into(),
            ],
            ..Fake::default()
        };
        let (_, failed) = run_each(&mut sys, &roots.sysroot, &steps[1..], replace);
        assert!(
            !sys.calls.iter().any(|c| c.contains("/sysroot/var/")),
            "{:#?}",
            sys.calls
        );
        assert!(sys
            .calls
            .contains(&"bind /sysroot/persistent/home /sysroot/home".to_string()));
        let skipped: Vec<String> = failed
            .iter()
            .filter(|(_, e)| matches!(e, StepError::Skipped { .. }))
            .map(|(_, e)| e.to_string())
            .collect();
        assert_eq!(
            skipped,
            [
                "skipped /sysroot/var/log/journal: it lies at or beneath /sysroot/var, \
              which could not be mounted"
            ]
        );
        // The tmpfs in its place works: the journal is bound into it.
        let mut sys = Fake {
            fail: vec!["bind /sysroot/persistent/slots/system_a/var".into()],
            ..Fake::default()
        };
        let (_, failed) = run_each(&mut sys, &roots.sysroot, &steps[1..], replace);
        assert_eq!(failed.len(), 1, "{failed:?}");
        let tmpfs = sys
            .calls
            .iter()
            .position(|c| c.starts_with("mount tmpfs /sysroot/var "))
            .unwrap();
        let journal = sys
            .calls
            .iter()
            .position(|c| c == "bind /sysroot/persistent/log/journal /sysroot/var/log/journal")
            .unwrap();
        assert!(tmpfs < journal);
        // A replacement stops at its first failure: no mkdir in a tmpfs that is
        // not there.
        let mut sys = Fake {
            fail: vec![
                "bind /sysroot/persistent/slots/system_a/var".into(),
                "mount tmpfs /sysroot/var ".into(),
            ],
            ..Fake::default()
        };
        run_each(&mut sys, &roots.sysroot, &steps[1..], replace);
        assert!(!sys.calls.iter().any(|c| c.starts_with("mkdir")));
    }

    #[test]
    fn suid_and_dev_options_clear_the_flags() {
        let (flags, data) = split_options(
            MsFlags::empty(),
            "nosuid,nodev,noexec,suid,dev,exec,commit=5",
        );
        assert!(flags.is_empty(), "{flags:?}");
        assert_eq!(data, "commit=5");
    }

    #[test]
    fn group_lookup() {
        let text = "root:x:0:\nsystemd-journal:x:101:\nbad\n";
        assert_eq!(parse_id(text, "systemd-journal"), Some(101));
        assert_eq!(parse_id(text, "root"), Some(0));
        assert_eq!(parse_id(text, "nobody"), None);
        assert_eq!(parse_id("x:y:notanumber:\n", "x"), None);
    }
}
