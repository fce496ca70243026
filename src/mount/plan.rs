//! Mount plan: the exact steps that turn a resolved layout into a system tree,
//! as values. Nothing here touches the kernel; the executor runs the steps.

use crate::config::{expand_slot, Config, OverlaySpec, Upper};
use crate::disk::devices::Partition;
use crate::kernel::sys::DmLine;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One step of the boot's mount work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub(crate) enum Step {
    /// mount(2) of a device or pseudo filesystem.
    Mount {
        source: String,
        target: PathBuf,
        fstype: String,
        readonly: bool,
        options: String,
    },
    /// A directory in a tree slotinit owns (tmpfs, initramfs), created with `mode`.
    Mkdir { path: PathBuf, mode: u32 },
    /// A directory beneath `root` (the persistent partition, which the booted
    /// system writes: resolved without following symlinks).
    DirBeneath {
        root: PathBuf,
        path: String,
        mode: u32,
        group: Option<String>,
        owner: Option<String>,
    },
    /// Bind `path` beneath `root` (again without following symlinks) onto
    /// `target`; an `optional` source that is absent is skipped.
    BindBeneath {
        root: PathBuf,
        path: String,
        target: PathBuf,
        optional: bool,
    },
    /// Make `target` (the system's /etc/machine-id) show a stable id: read from
    /// `store`, or generated and written there durably when it holds none.
    MachineId {
        store: MachineIdStore,
        target: PathBuf,
    },
    /// Block-device setup: the device-mapper target `name` over `device` (a
    /// partition) with its `table`, read-only or not. A later mount of
    /// [`mapped_node`]`(name)` mounts the device it made; when a later step of
    /// the same run fails, the executor removes it again (the seam for LUKS
    /// and dm-verity).
    DeviceMapper {
        name: String,
        device: PathBuf,
        readonly: bool,
        table: Vec<DmLine>,
    },
}

/// How a plan names the device a [`Step::DeviceMapper`] makes before it exists
/// (udev's name for it; the executor puts the real node in its place).
pub(super) fn mapped_node(name: &str) -> String {
    format!("/dev/mapper/{name}")
}

/// Puts `device` behind the device-mapper target `name`: its setup step goes
/// before the first mount of `device`, and every mount of `device` mounts the
/// mapped device instead. No config key asks for it yet (LUKS and dm-verity
/// will), so only the tests build with it until one does; unchanged when no
/// step mounts `device`.
#[cfg(test)]
pub(crate) fn map_device(
    steps: Vec<Step>,
    name: &str,
    device: &Path,
    readonly: bool,
    table: Vec<DmLine>,
) -> Vec<Step> {
    let source = device.to_string_lossy();
    let mounts = |s: &Step| matches!(s, Step::Mount { source: src, .. } if *src == source);
    let Some(first) = steps.iter().position(mounts) else {
        return steps;
    };
    let mut out = Vec::with_capacity(steps.len() + 1);
    for (i, mut step) in steps.into_iter().enumerate() {
        if i == first {
            out.push(Step::DeviceMapper {
                name: name.to_string(),
                device: device.to_path_buf(),
                readonly,
                table: table.clone(),
            });
        }
        if let Step::Mount { source: src, .. } = &mut step {
            if *src == source {
                *src = mapped_node(name);
            }
        }
        out.push(step);
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum MachineIdStore {
    /// On the persistent partition: the id every slot and every boot shares.
    Persistent { root: PathBuf, path: String },
    /// Only for this boot (persistent partition unusable), under /run; the id is
    /// taken from `seed` (a read-only persistent partition) when it holds one,
    /// so the system keeps its identity.
    Transient {
        path: PathBuf,
        seed: Option<(PathBuf, String)>,
    },
}

/// Where the pieces go: the new root and where transient state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Roots {
    pub(crate) sysroot: PathBuf,
    /// slotinit's own directory under /run (moved into the system with /run).
    pub(crate) run_dir: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sysroot: PathBuf::from(crate::paths::SYSROOT),
            run_dir: PathBuf::from(crate::paths::RUN_DIR),
        }
    }
}

/// `/var` in the system becomes `<sysroot>/var` here.
pub(crate) fn in_sysroot(sysroot: &Path, path: &str) -> PathBuf {
    sysroot.join(path.trim_start_matches('/'))
}

/// The system's mount options: always read-only, so an `rw` is dropped (the
/// step's `readonly` adds `ro`; the executor also keeps a read-only step
/// read-only whatever its options say).
fn system_options(options: &str) -> String {
    options
        .split(',')
        .filter(|o| !o.is_empty() && *o != "rw")
        .collect::<Vec<_>>()
        .join(",")
}

/// The persistent partition's mount options: `nosuid,nodev` first, unless the
/// config's options say `suid`/`dev` (or repeat them). The booted system writes
/// this partition: a device node or a setuid binary planted there must not take
/// effect, and every bind from it inherits these flags.
fn persistent_options(options: &str) -> String {
    let words: Vec<&str> = options.split(',').filter(|o| !o.is_empty()).collect();
    let mut out = Vec::new();
    if !words.iter().any(|w| matches!(*w, "suid" | "nosuid")) {
        out.push("nosuid");
    }
    if !words.iter().any(|w| matches!(*w, "dev" | "nodev")) {
        out.push("nodev");
    }
    out.extend(words);
    out.join(",")
}

/// Mount the active system read-only at the sysroot, then the tmpfs-backed
/// overlays. With an overlay on "/", the system is mounted below /run and the
/// sysroot is the overlay.
pub(crate) fn root_plan(config: &Config, roots: &Roots, system: &Partition) -> Vec<Step> {
    let whole_root = config.overlay.iter().find(|o| o.target == "/");
    let lower = match whole_root {
        Some(_) => roots.run_dir.join("lower"),
        None => roots.sysroot.clone(),
    };
    let mut steps = Vec::new();
    if whole_root.is_some() {
        steps.push(Step::Mkdir {
            path: lower.clone(),
            mode: 0o755,
        });
    }
    steps.push(Step::Mount {
        source: system.node().display().to_string(),
        target: lower.clone(),
        fstype: config.system.fstype.clone(),
        readonly: true,
        options: system_options(&config.system.options),
    });
    for (i, o) in config.overlay.iter().enumerate() {
        if o.upper == Upper::Tmpfs {
            let lowerdir = if o.target == "/" {
                lower.clone()
            } else {
                in_sysroot(&roots.sysroot, &o.target)
            };
            steps.extend(tmpfs_overlay(roots, i, o, &lowerdir));
        }
    }
    steps
}

/// A size-limited tmpfs under /run holding `upper/` and `work/`, and the overlay.
fn tmpfs_overlay(roots: &Roots, index: usize, o: &OverlaySpec, lowerdir: &Path) -> Vec<Step> {
    let base = roots.run_dir.join(format!("overlay/{index}"));
    vec![
        Step::Mkdir {
            path: base.clone(),
            mode: 0o755,
        },
        Step::Mount {
            source: "tmpfs".into(),
            target: base.clone(),
            fstype: "tmpfs".into(),
            readonly: false,
            options: format!("mode=0755,size={}", o.size),
        },
        Step::Mkdir {
            path: base.join("upper"),
            mode: 0o755,
        },
        Step::Mkdir {
            path: base.join("work"),
            mode: 0o755,
        },
        overlay_mount(
            lowerdir,
            &base.join("upper"),
            &base.join("work"),
            &in_sysroot(&roots.sysroot, &o.target),
        ),
    ]
}

fn overlay_mount(lower: &Path, upper: &Path, work: &Path, target: &Path) -> Step {
    Step::Mount {
        source: "overlay".into(),
        target: target.to_path_buf(),
        fstype: "overlay".into(),
        readonly: false,
        options: format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        ),
    }
}

/// Mount the persistent partition, create its tree, bind it into the system and
/// give the system its machine-id. `slot_dir` names the slot's directory.
pub(crate) fn persistent_plan(
    config: &Config,
    roots: &Roots,
    persistent: &Partition,
    slot_dir: &str,
) -> Vec<Step> {
    let p = &config.persistent;
    let root = in_sysroot(&roots.sysroot, &p.mountpoint);
    let mut steps = vec![Step::Mount {
        source: persistent.node().display().to_string(),
        target: root.clone(),
        fstype: p.fstype.clone(),
        readonly: false,
        options: persistent_options(&p.options),
    }];
    steps.extend(p.dirs.iter().map(|d| Step::DirBeneath {
        root: root.clone(),
        path: expand_slot(&d.path, slot_dir),
        mode: d.mode,
        group: d.group.clone(),
        owner: d.owner.clone(),
    }));
    for b in &p.binds {
        let path = expand_slot(&b.source, slot_dir);
        let listed = steps
            .iter()
            .any(|s| matches!(s, Step::DirBeneath { path: p, .. } if *p == path));
        if b.create && !listed {
            steps.push(Step::DirBeneath {
                root: root.clone(),
                path: path.clone(),
                mode: b.mode,
                group: b.group.clone(),
                owner: b.owner.clone(),
            });
        }
    }
    steps.extend(p.binds.iter().map(|b| Step::BindBeneath {
        root: root.clone(),
        path: expand_slot(&b.source, slot_dir),
        target: in_sysroot(&roots.sysroot, &b.target),
        optional: !b.create,
    }));
    // Overlays whose changes persist, per slot with {slot}. The directories are
    // created beneath the root without following symlinks; nothing else runs in
    // the initramfs, so the checked path is the path the kernel then resolves.
    for o in config
        .overlay
        .iter()
        .filter(|o| o.upper == Upper::Persistent)
    {
        let dir = expand_slot(o.path.as_deref().unwrap_or_default(), slot_dir);
        for sub in ["upper", "work"] {
            steps.push(Step::DirBeneath {
                root: root.clone(),
                path: format!("{dir}/{sub}"),
                mode: 0o755,
                group: None,
                owner: None,
            });
        }
        let target = in_sysroot(&roots.sysroot, &o.target);
        steps.push(overlay_mount(
            &target,
            &root.join(&dir).join("upper"),
            &root.join(&dir).join("work"),
            &target,
        ));
    }
    if !p.machine_id.is_empty() {
        steps.push(Step::MachineId {
            store: MachineIdStore::Persistent {
                root,
                path: p.machine_id.clone(),
            },
            target: in_sysroot(&roots.sysroot, "/etc/machine-id"),
        });
    }
    steps
}

/// Without a usable persistent partition the system still boots: every bind
/// target gets a tmpfs (nested targets become directories in it), directories keep
/// their documented modes, and the machine-id lives under /run for this boot only
/// (copied from `seed`, a read-only persistent root, when it has a valid one).
pub(crate) fn fallback_plan(
    config: &Config,
    roots: &Roots,
    slot_dir: &str,
    seed: Option<&Path>,
) -> Vec<Step> {
    let p = &config.persistent;
    let mut steps = Vec::new();
    let mut tmpfs_roots: Vec<&str> = Vec::new();
    for bind in &p.binds {
        let nested = tmpfs_roots.iter().any(|r| is_beneath(&bind.target, r));
        if !nested {
            tmpfs_roots.push(&bind.target);
            steps.push(Step::Mount {
                source: "tmpfs".into(),
                target: in_sysroot(&roots.sysroot, &bind.target),
                fstype: "tmpfs".into(),
                readonly: false,
                options: "mode=0755,nosuid,nodev".into(),
            });
        }
    }
    steps.extend(mapped_dirs(config, roots, slot_dir, "/"));
    // Overlays meant for the persistent partition keep working, on tmpfs.
    let first = config.overlay.len();
    for (i, o) in config.overlay.iter().enumerate() {
        if o.upper == Upper::Persistent {
            let target = in_sysroot(&roots.sysroot, &o.target);
            steps.extend(tmpfs_overlay(roots, first + i, o, &target));
        }
    }
    if !p.machine_id.is_empty() {
        steps.push(Step::MachineId {
            store: MachineIdStore::Transient {
                path: roots.run_dir.join("machine-id"),
                seed: seed.map(|root| (root.to_path_buf(), p.machine_id.clone())),
            },
            target: in_sysroot(&roots.sysroot, "/etc/machine-id"),
        });
    }
    steps
}

/// The persistent tree's directories, mapped through the binds to where they
/// appear in the system, those beneath `under`; in order, so parents come first.
fn mapped_dirs(config: &Config, roots: &Roots, slot_dir: &str, under: &str) -> Vec<Step> {
    let p = &config.persistent;
    let mut steps = Vec::new();
    for dir in &p.dirs {
        let path = expand_slot(&dir.path, slot_dir);
        for bind in &p.binds {
            let source = expand_slot(&bind.source, slot_dir);
            if let Some(rest) = strip_beneath(&path, &source) {
                let target = format!("{}/{}", bind.target.trim_end_matches('/'), rest);
                let target = target.trim_end_matches('/');
                if under == "/" || is_beneath(target, under) {
                    steps.push(Step::Mkdir {
                        path: in_sysroot(&roots.sysroot, target),
                        mode: dir.mode,
                    });
                }
            }
        }
    }
    // Mount points of later binds nested in it.
    for bind in &p.binds {
        if under != "/" && bind.target != under && is_beneath(&bind.target, under) {
            steps.push(Step::Mkdir {
                path: in_sysroot(&roots.sysroot, &bind.target),
                mode: 0o755,
            });
        }
    }
    steps
}

/// What replaces a bind that could not be made (a planted symlink, a full
/// disk): a tmpfs on its target with the directories the system expects there.
pub(crate) fn bind_fallback(
    config: &Config,
    roots: &Roots,
    slot_dir: &str,
    target: &Path,
) -> Vec<Step> {
    let mut steps = vec![Step::Mount {
        source: "tmpfs".into(),
        target: target.to_path_buf(),
        fstype: "tmpfs".into(),
        readonly: false,
        options: "mode=0755,nosuid,nodev".into(),
    }];
    if let Ok(rel) = target.strip_prefix(&roots.sysroot) {
        let under = format!("/{}", rel.display());
        steps.extend(mapped_dirs(config, roots, slot_dir, &under));
    }
    steps
}

/// Just the machine-id of the fallback: transient, copied from `seed` if valid.
pub(crate) fn transient_machine_id(
    config: &Config,
    roots: &Roots,
    seed: Option<&Path>,
) -> Vec<Step> {
    fallback_plan(config, roots, "", seed)
        .into_iter()
        .filter(|s| matches!(s, Step::MachineId { .. }))
        .collect()
}

/// `a/b/c` beneath `a/b` -> `c`; `a/b` beneath `a/b` -> ``.
fn strip_beneath<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix('/')
    }
}

fn is_beneath(path: &str, base: &str) -> bool {
    strip_beneath(path, base).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(dev: &str) -> Partition {
        crate::disk::devices::fixtures::part(dev, "vda", 1, None)
    }

    fn linear(device: &str) -> Vec<DmLine> {
        vec![DmLine {
            start: 0,
            length: 2048,
            target: "linear".into(),
            params: format!("{device} 0"),
        }]
    }

    #[test]
    fn a_mapped_device_is_set_up_before_its_mount_and_replaces_it() {
        let config = Config::default();
        let roots = Roots::default();
        let steps = root_plan(&config, &roots, &part("vda4"));
        let mapped = map_device(
            steps.clone(),
            "root",
            Path::new("/dev/vda4"),
            true,
            linear("/dev/vda4"),
        );
        assert_eq!(mapped.len(), steps.len() + 1);
        assert_eq!(
            mapped[0],
            Step::DeviceMapper {
                name: "root".into(),
                device: "/dev/vda4".into(),
                readonly: true,
                table: linear("/dev/vda4"),
            }
        );
        assert!(
            matches!(&mapped[1], Step::Mount { source, target, .. }
                if source == "/dev/mapper/root" && target == &roots.sysroot),
            "{:?}",
            mapped[1]
        );
        assert!(!mapped
            .iter()
            .any(|s| matches!(s, Step::Mount { source, .. } if source == "/dev/vda4")));
        // A device no step mounts: nothing to map.
        let same = map_device(steps.clone(), "x", Path::new("/dev/vdz"), true, vec![]);
        assert_eq!(same, steps);
    }

    #[test]
    fn root_is_read_only() {
        let plan = root_plan(&Config::default(), &Roots::default(), &part("vda4"));
        assert_eq!(
            plan,
            vec![Step::Mount {
                source: "/dev/vda4".into(),
                target: "/sysroot".into(),
                fstype: "ext4".into(),
                readonly: true,
                options: String::new(),
            }]
        );
    }

    #[test]
    fn persistent_plan_for_the_rpi_layout() {
        let plan = persistent_plan(
            &Config::default(),
            &Roots::default(),
            &part("vda6"),
            "system_b",
        );
        let Step::Mount {
            target,
            options,
            readonly,
            ..
        } = &plan[0]
        else {
            panic!("{:?}", plan[0]);
        };
        assert_eq!(target, Path::new("/sysroot/persistent"));
        assert_eq!(
            options,
            "nosuid,nodev,noatime,lazytime,commit=60,errors=remount-ro"
        );
        assert!(!readonly);
        let dirs: Vec<(&str, u32)> = plan
            .iter()
            .filter_map(|s| match s {
                Step::DirBeneath { path, mode, .. } => Some((path.as_str(), *mode)),
                _ => None,
            })
            .collect();
        assert!(dirs.contains(&("slots/system_b/var/tmp", 0o1777)));
        assert!(dirs.contains(&("log/journal", 0o2755)));
        let binds: Vec<(&str, &Path)> = plan
            .iter()
            .filter_map(|s| match s {
                Step::BindBeneath { path, target, .. } => Some((path.as_str(), target.as_path())),
                _ => None,
            })
            .collect();
        assert_eq!(
            binds,
            vec![
                ("slots/system_b/var", Path::new("/sysroot/var")),
                ("home", Path::new("/sysroot/home")),
                ("log/journal", Path::new("/sysroot/var/log/journal")),
            ]
        );
        assert_eq!(
            plan.last(),
            Some(&Step::MachineId {
                store: MachineIdStore::Persistent {
                    root: "/sysroot/persistent".into(),
                    path: "common/etc/machine-id".into()
                },
                target: "/sysroot/etc/machine-id".into(),
            })
        );
    }

    #[test]
    fn every_dir_is_created_before_it_is_bound() {
        let plan = persistent_plan(
            &Config::default(),
            &Roots::default(),
            &part("vda6"),
            "system_a",
        );
        for (i, step) in plan.iter().enumerate() {
            if let Step::BindBeneath { path, .. } = step {
                let created = plan[..i]
                    .iter()
                    .any(|s| matches!(s, Step::DirBeneath { path: p, .. } if p == path));
                assert!(created, "{path} bound before it was created");
            }
        }
    }

    #[test]
    fn fallback_puts_tmpfs_under_the_binds() {
        let plan = fallback_plan(&Config::default(), &Roots::default(), "system_a", None);
        let mounts: Vec<&Path> = plan
            .iter()
            .filter_map(|s| match s {
                Step::Mount { target, fstype, .. } if fstype == "tmpfs" => Some(target.as_path()),
                _ => None,
            })
            .collect();
        // /var/log/journal lies inside /var's tmpfs: a directory, not another mount.
        assert_eq!(
            mounts,
            vec![Path::new("/sysroot/var"), Path::new("/sysroot/home")]
        );
        let dirs: Vec<(&Path, u32)> = plan
            .iter()
            .filter_map(|s| match s {
                Step::Mkdir { path, mode } => Some((path.as_path(), *mode)),
                _ => None,
            })
            .collect();
        assert!(dirs.contains(&(Path::new("/sysroot/var/tmp"), 0o1777)));
        assert!(dirs.contains(&(Path::new("/sysroot/var/log/journal"), 0o2755)));
        assert!(matches!(
            plan.last(),
            Some(Step::MachineId {
                store: MachineIdStore::Transient { .. },
                ..
            })
        ));
    }

    fn with_overlays(toml: &str) -> Config {
        Config::parse(toml, "t").unwrap()
    }

    #[test]
    fn whole_root_overlay_on_tmpfs() {
        let c = with_overlays("[[overlay]]\ntarget = \"/\"\nsize = \"32m\"\n");
        let plan = root_plan(&c, &Roots::default(), &part("vda4"));
        let mounts: Vec<(&str, &Path, &str)> = plan
            .iter()
            .filter_map(|s| match s {
                Step::Mount {
                    source,
                    target,
                    options,
                    ..
                } => Some((source.as_str(), target.as_path(), options.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            mounts,
            vec![
                ("/dev/vda4", Path::new("/run/slotinit/lower"), ""),
                (
                    "tmpfs",
                    Path::new("/run/slotinit/overlay/0"),
                    "mode=0755,size=32m"
                ),
                (
                    "overlay",
                    Path::new("/sysroot"),
                    "lowerdir=/run/slotinit/lower,upperdir=/run/slotinit/overlay/0/upper,\
                     workdir=/run/slotinit/overlay/0/work"
                ),
            ]
        );
    }

    #[test]
    fn directory_overlays_tmpfs_and_persistent() {
        let c = with_overlays(
            "[[overlay]]\ntarget = \"/etc\"\n\
             [[overlay]]\ntarget = \"/srv\"\nupper = \"persistent\"\npath = \"overlay/{slot}/srv\"\n",
        );
        let roots = Roots::default();
        let root = root_plan(&c, &roots, &part("vda4"));
        assert!(root.contains(&Step::Mount {
            source: "overlay".into(),
            target: "/sysroot/etc".into(),
            fstype: "overlay".into(),
            readonly: false,
            options: "lowerdir=/sysroot/etc,upperdir=/run/slotinit/overlay/0/upper,\
                      workdir=/run/slotinit/overlay/0/work"
                .into(),
        }));
        assert!(!root.iter().any(
            |s| matches!(s, Step::Mount { target, .. } if target == Path::new("/sysroot/srv"))
        ));
        let pers = persistent_plan(&c, &roots, &part("vda6"), "system_b");
        assert!(pers.contains(&Step::DirBeneath {
            root: "/sysroot/persistent".into(),
            path: "overlay/system_b/srv/upper".into(),
            mode: 0o755,
            group: None,
            owner: None,
        }));
        assert!(pers.contains(&Step::Mount {
            source: "overlay".into(),
            target: "/sysroot/srv".into(),
            fstype: "overlay".into(),
            readonly: false,
            options:
                "lowerdir=/sysroot/srv,upperdir=/sysroot/persistent/overlay/system_b/srv/upper,\
                      workdir=/sysroot/persistent/overlay/system_b/srv/work"
                    .into(),
        }));
        // Without the persistent partition, that overlay still comes up on tmpfs.
        let fb = fallback_plan(&c, &roots, "system_b", None);
        assert!(fb
            .iter()
            .any(|s| matches!(s, Step::Mount { fstype, target, .. }
            if fstype == "overlay" && target == Path::new("/sysroot/srv"))));
    }

    #[test]
    fn bind_options() {
        let c = with_overlays(
            "[persistent]\ndir = []\nmachine_id = \"\"\n\
             bind = [{ source = \"data\", target = \"/data\", mode = 0o700, owner = \"app\", group = \"app\" },\
                     { source = \"opt/{slot}\", target = \"/opt\", create = false }]\n",
        );
        let plan = persistent_plan(&c, &Roots::default(), &part("vda6"), "system_a");
        assert_eq!(
            plan[1..],
            [
                Step::DirBeneath {
                    root: "/sysroot/persistent".into(),
                    path: "data".into(),
                    mode: 0o700,
                    group: Some("app".into()),
                    owner: Some("app".into()),
                },
                Step::BindBeneath {
                    root: "/sysroot/persistent".into(),
                    path: "data".into(),
                    target: "/sysroot/data".into(),
                    optional: false,
                },
                Step::BindBeneath {
                    root: "/sysroot/persistent".into(),
                    path: "opt/system_a".into(),
                    target: "/sysroot/opt".into(),
                    optional: true,
                },
            ]
        );
    }

    #[test]
    fn a_failed_var_bind_gets_tmpfs_with_its_tree() {
        let roots = Roots::default();
        let steps = bind_fallback(
            &Config::default(),
            &roots,
            "system_a",
            Path::new("/sysroot/var"),
        );
        assert!(matches!(&steps[0], Step::Mount { fstype, target, .. }
            if fstype == "tmpfs" && target == Path::new("/sysroot/var")));
        let dirs: Vec<(&Path, u32)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Mkdir { path, mode } => Some((path.as_path(), *mode)),
                _ => None,
            })
            .collect();
        assert!(
            dirs.contains(&(Path::new("/sysroot/var/tmp"), 0o1777)),
            "{dirs:?}"
        );
        // The journal's mount point, so its own bind can still be made.
        assert!(dirs
            .iter()
            .any(|(p, _)| *p == Path::new("/sysroot/var/log/journal")));
        assert!(!dirs.iter().any(|(p, _)| p.starts_with("/sysroot/home")));
    }

    #[test]
    fn the_system_is_read_only_whatever_its_options() {
        for (options, want) in [
            ("rw", ""),
            ("rw,noatime", "noatime"),
            ("noatime,rw,data=ordered", "noatime,data=ordered"),
            ("ro", "ro"),
            ("", ""),
        ] {
            // check-config rejects `rw`; the plan holds even for a config
            // that did not go through it.
            let mut c = Config::default();
            c.system.options = options.into();
            let plan = root_plan(&c, &Roots::default(), &part("vda4"));
            assert_eq!(
                plan[0],
                Step::Mount {
                    source: "/dev/vda4".into(),
                    target: "/sysroot".into(),
                    fstype: "ext4".into(),
                    readonly: true,
                    options: want.into(),
                },
                "{options}"
            );
        }
    }

    #[test]
    fn persistent_is_nosuid_nodev_unless_asked() {
        for (options, want) in [
            ("", "nosuid,nodev"),
            ("noatime", "nosuid,nodev,noatime"),
            ("dev", "nosuid,dev"),
            ("suid,noatime", "nodev,suid,noatime"),
            ("suid,dev", "suid,dev"),
            ("nodev", "nosuid,nodev"),
        ] {
            let c = with_overlays(&format!("[persistent]\noptions = \"{options}\"\n"));
            let plan = persistent_plan(&c, &Roots::default(), &part("vda6"), "system_a");
            let Step::Mount { options: got, .. } = &plan[0] else {
                panic!("{:?}", plan[0]);
            };
            assert_eq!(got, want, "{options}");
        }
    }

    /// devices::slot_dir: its test lives here, beside the plan that uses it.
    #[test]
    fn slot_dirs_differ_whatever_the_names() {
        use crate::disk::devices::{fixtures, slot_dir, Resolved};
        use crate::types::Slot;
        let with = |a: Option<&str>, b: Option<&str>| Resolved {
            system_a: Some(fixtures::part("mmcblk0p2", "mmcblk0", 2, a)),
            system_b: Some(fixtures::part("mmcblk0p3", "mmcblk0", 3, b)),
            ..Resolved::default()
        };
        let cases: &[(Option<&str>, Option<&str>, &str, &str)] = &[
            // rpi-image-gen: the lowercased PARTLABEL.
            (Some("SYSTEM_A"), Some("system_b"), "system_a", "system_b"),
            (Some("rootA"), Some("rootB"), "roota", "rootb"),
            // One name twice (or twice up to case): the role names.
            (Some("rootfs"), Some("rootfs"), "system_a", "system_b"),
            (Some("RootFS"), Some("rootfs"), "system_a", "system_b"),
            (Some(""), Some(""), "system_a", "system_b"),
            (None, None, "system_a", "system_b"),
            // A name that is the other slot's role name.
            (Some("system_b"), None, "system_a", "system_b"),
            (Some(".."), Some("."), "system_a", "system_b"),
            (Some("a/b"), Some("x"), "system_a", "x"),
        ];
        for (a, b, want_a, want_b) in cases {
            let r = with(*a, *b);
            assert_eq!(
                (slot_dir(&r, Slot::A), slot_dir(&r, Slot::B)),
                (want_a.to_string(), want_b.to_string()),
                "{a:?} {b:?}"
            );
        }
        // The other slot's partition missing: its role name is what it would use.
        let mut r = with(Some("rootfs"), None);
        r.system_b = None;
        assert_eq!(slot_dir(&r, Slot::A), "rootfs");
    }

    #[test]
    fn beneath_is_by_component() {
        assert_eq!(strip_beneath("a/b/c", "a/b"), Some("c"));
        assert_eq!(strip_beneath("a/b", "a/b"), Some(""));
        assert_eq!(strip_beneath("a/bc", "a/b"), None);
        assert!(is_beneath("/var/log", "/var"));
        assert!(!is_beneath("/variable", "/var"));
    }
}
