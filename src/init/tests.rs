//! Host tests of PID 1's stages on the recording fake: what each stage asks
//! the kernel, in order, and what it records (kinds, never English).

use super::context::Boot;
use super::*;
use crate::disk::devices::{self, fixtures::rpi_disk};
use crate::kernel::fake::Fake;
use crate::kind;
use crate::paths::{CONFIG_PATH, HANDOFF_PATH, RUN_CONFIG};

const ID: &str = "0123456789abcdef0123456789abcdef";
const STORED_ID: &str = "/sysroot/persistent/common/etc/machine-id";

/// A boot on the rpi layout (vda4 system_a, vda5 system_b, vda6 persistent).
fn rpi_boot(sys: &mut Fake) -> Boot<'_, Fake> {
    let mut boot = Boot::new(sys);
    boot.resolved = devices::resolve(&rpi_disk("vda"), &boot.config.partitions);
    boot
}

fn handoff_json(sys: &Fake) -> serde_json::Value {
    let bytes = &sys.files[Path::new(HANDOFF_PATH)];
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn setup_mounts_the_api_filesystems_gives_a_console_reads_cmdline_and_config() {
    let mut sys = Fake::default();
    sys.files.insert(
        "/proc/cmdline".into(),
        b"root=/dev/vda4 slotinit.debug slotinit.slot=x -- single".to_vec(),
    );
    sys.files
        .insert(CONFIG_PATH.into(), b"[boot]\nreboot_delay_s = 3\n".to_vec());
    let mut boot = Boot::new(&mut sys);
    mount_api_filesystems(boot.sys);
    ensure_console(boot.sys);
    setup::read_cmdline(&mut boot, ["/init".into(), "single".into()]);
    setup::load_config(&mut boot).unwrap();
    assert!(boot.args.debug);
    assert_eq!(boot.args.init_argv, ["single"]);
    assert_eq!(boot.config.boot.reboot_delay_s, 3);
    assert_eq!(boot.report.kinds(), [kind::CMDLINE], "slotinit.slot=x");
    assert_eq!(
        sys.calls,
        [
            "create-dir-all /proc",
            "mount proc /proc proc rw,nosuid,nodev,noexec ",
            "create-dir-all /sys",
            "mount sysfs /sys sysfs rw,nosuid,nodev,noexec ",
            "create-dir-all /dev",
            "mount devtmpfs /dev devtmpfs rw,nosuid mode=0755",
            "create-dir-all /run",
            "mount tmpfs /run tmpfs rw,nosuid,nodev mode=0755",
            "exists /proc/self/fd/0",
            "open /dev/console",
            "open /dev/console",
            "open /dev/console",
            "read-file /proc/cmdline",
            "read-file /etc/slotinit.toml",
            "create-dir-all /run/slotinit",
            "copy /etc/slotinit.toml /run/slotinit/config.toml",
        ]
    );
    assert!(sys.files.contains_key(Path::new(RUN_CONFIG)));
}

#[test]
fn setup_goes_on_without_proc_and_with_stdio_but_refuses_a_bad_config() {
    let mut sys = Fake {
        fail: vec!["mount proc".into(), "open /dev/console".into()],
        ..Fake::default()
    };
    sys.files.insert("/proc/self/fd/0".into(), Vec::new());
    sys.files
        .insert(CONFIG_PATH.into(), b"[boot]\nno_such_key = 1\n".to_vec());
    let mut boot = Boot::new(&mut sys);
    mount_api_filesystems(boot.sys);
    ensure_console(boot.sys);
    setup::read_cmdline(&mut boot, ["/init".into()]);
    let cause = setup::load_config(&mut boot).unwrap_err();
    assert!(cause.starts_with("config: "), "{cause}");
    // The reboot delay of a fatal end is the default's.
    assert_eq!(boot.config, crate::config::Config::default());
    assert_eq!(sys.calls_starting("mount").len(), 4, "the rest still mount");
    assert!(sys.calls_starting("open").is_empty(), "stdio is there");
    assert!(
        sys.calls_starting("copy").is_empty(),
        "no copy of a bad config"
    );
    // Without a console the boot goes on too.
    let mut sys = Fake {
        fail: vec!["open /dev/console".into()],
        ..Fake::default()
    };
    ensure_console(&mut sys);
    assert_eq!(sys.calls_starting("open"), ["open /dev/console"]);
}

#[test]
fn modules_stage_records_each_failed_module() {
    let mut sys = Fake {
        errno: vec![("finit_module /m/b.ko".into(), libc::ENOENT)],
        ..Fake::default()
    };
    sys.files.insert(
        crate::paths::LOAD_LIST.into(),
        b"/m/a.ko\n/m/b.ko\n".to_vec(),
    );
    let mut boot = Boot::new(&mut sys);
    let mut modules = super::devices::start_modules(&mut boot);
    super::devices::wait_modules(&mut boot, &mut modules, Scope::All);
    assert_eq!(boot.report.kinds(), [kind::MODULE]);
    assert_eq!(
        sys.calls_starting("finit_module"),
        ["finit_module /m/a.ko \"\"", "finit_module /m/b.ko \"\""]
    );
}

/// No list: nothing loads, nothing fails.
#[test]
fn no_module_list_loads_nothing() {
    let mut sys = Fake::default();
    let mut boot = Boot::new(&mut sys);
    let mut modules = super::devices::start_modules(&mut boot);
    super::devices::wait_modules(&mut boot, &mut modules, Scope::All);
    assert_eq!(boot.report.kinds(), Vec::<&str>::new());
    assert_eq!(sys.calls_starting("finit_module"), Vec::<String>::new());
    assert_eq!(
        sys.calls_starting("load-modules"),
        ["load-modules 0 threads auto"]
    );
}

/// The early modules (disk and watchdog drivers) are waited for before the
/// disk, the rest before anything mounts; a failure found at either wait is
/// recorded once.
#[test]
fn modules_are_waited_for_early_then_all() {
    let mut sys = Fake {
        errno: vec![("finit_module /m/vfat.ko".into(), libc::ENOEXEC)],
        ..Fake::default()
    };
    sys.files.insert(
        crate::paths::LOAD_LIST.into(),
        b"# slotinit modules.load v2\n/m/virtio_blk.ko early\n/m/vfat.ko\n".to_vec(),
    );
    let mut boot = Boot::new(&mut sys);
    let mut modules = super::devices::start_modules(&mut boot);
    super::devices::wait_modules(&mut boot, &mut modules, Scope::Early);
    super::devices::wait_modules(&mut boot, &mut modules, Scope::All);
    assert_eq!(boot.report.kinds(), [kind::MODULE]);
    assert_eq!(
        sys.calls_starting("wait-modules"),
        ["wait-modules early", "wait-modules all"]
    );
}

/// The devices stage as the init runs it: wait for the disk, then resolve.
fn find_devices(boot: &mut Boot<Fake>, listener: &crate::kernel::sys::Listener) {
    let partitions = super::devices::wait_for_disk(boot, listener);
    super::devices::resolve(boot, &partitions);
}

/// A sysfs tree in the fake with `disk`'s rpi partitions.
fn sysfs(sys: &mut Fake, disk: &str) {
    for p in rpi_disk(disk) {
        let real = format!("/sys/devices/platform/{disk}/{}", p.dev);
        sys.links.insert(
            format!("/sys/class/block/{}", p.dev).into(),
            real.clone().into(),
        );
        let name = p.name.unwrap_or_default();
        sys.files.insert(
            format!("{real}/uevent").into(),
            format!(
                "DEVNAME={}\nDEVTYPE=partition\nPARTN={}\nPARTNAME={name}\n",
                p.dev, p.number
            )
            .into_bytes(),
        );
    }
}

#[test]
fn devices_stage_resolves_the_layout_from_sysfs() {
    let mut sys = Fake::default();
    sysfs(&mut sys, "vda");
    let mut boot = Boot::new(&mut sys);
    let listener = crate::disk::uevent::listen(boot.sys);
    find_devices(&mut boot, &listener);
    assert_eq!(boot.report.kinds(), Vec::<&str>::new());
    let node = |p: Option<&devices::Partition>| p.map(|p| p.dev.clone());
    assert_eq!(node(boot.resolved.system(Slot::A)).as_deref(), Some("vda4"));
    assert_eq!(
        node(boot.resolved.persistent.as_ref()).as_deref(),
        Some("vda6")
    );
    assert_eq!(boot.report.handoff.devices, boot.resolved);
    assert!(
        sys.calls_starting("uevent-wait").is_empty(),
        "all there at once"
    );
}

/// `partitions.slot_map`: rpi-image-gen's static map names the slots'
/// partitions by number on the disk the device tree's boot-mode names (here
/// the other way round from the GPT names, to tell them apart).
#[test]
fn devices_stage_follows_the_slot_map_on_the_boot_disk() {
    let map = b"a.boot=::3\na.system=::5\nb.boot=::2\nb.system=::4\n".to_vec();
    let run = |boot_mode: Option<u32>| {
        let mut sys = Fake::default();
        sysfs(&mut sys, "mmcblk0");
        sysfs(&mut sys, "nvme0n1");
        sys.files.insert("/boot/slot.map".into(), map.clone());
        if let Some(m) = boot_mode {
            sys.files
                .insert(crate::paths::DT_BOOT_MODE.into(), m.to_be_bytes().to_vec());
        }
        let mut boot = Boot::new(&mut sys);
        boot.config.partitions.slot_map = "/boot/slot.map".into();
        let listener = crate::disk::uevent::listen(boot.sys);
        find_devices(&mut boot, &listener);
        let dev = |p: Option<&devices::Partition>| p.map(|p| p.dev.clone()).unwrap_or_default();
        (
            boot.report
                .handoff
                .errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>(),
            dev(boot.resolved.system(Slot::A)),
            dev(boot.resolved.boot(Slot::B)),
        )
    };
    // SD card: the map's numbers on mmcblk0, never on the NVMe disk.
    let (errors, system_a, boot_b) = run(Some(1));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        (system_a.as_str(), boot_b.as_str()),
        ("mmcblk05", "mmcblk02")
    );
    let (_, system_a, _) = run(Some(6));
    assert_eq!(system_a, "nvme0n15");
    // No boot-mode: the map cannot be placed; an error, the GPT names stand
    // (found on two disks here, so they resolve to nothing: never a guess).
    let (errors, system_a, _) = run(None);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("slot map /boot/slot.map") && e.contains("boot-mode (absent)")),
        "{errors:?}"
    );
    assert_ne!(system_a, "mmcblk05");
}

#[test]
fn devices_stage_times_out_on_an_empty_machine() {
    let mut sys = Fake::default();
    let mut boot = Boot::new(&mut sys);
    boot.config.boot.device_timeout_ms = 20;
    find_devices(&mut boot, &crate::kernel::sys::Listener::none());
    assert_eq!(boot.report.kinds()[0], kind::DEVICE_TIMEOUT);
    assert!(boot.report.kinds()[1..].iter().all(|k| *k == kind::DEVICES));
    assert!(!sys.calls_starting("uevent-wait").is_empty(), "it waited");
}

#[test]
fn links_stage_points_by_slot_at_the_partitions() {
    let mut sys = Fake {
        fail: vec!["symlink /dev/disk/by-slot/other/system".into()],
        ..Fake::default()
    };
    let mut boot = rpi_boot(&mut sys);
    create_links(&mut boot, Slot::B);
    assert_eq!(boot.report.kinds(), [kind::LINK]);
    assert_eq!(
        sys.calls_starting("symlink"),
        [
            "symlink /dev/disk/by-slot/active/boot -> ../../../vda3",
            "symlink /dev/disk/by-slot/active/system -> ../../../vda5",
            "symlink /dev/disk/by-slot/other/boot -> ../../../vda2",
            "symlink /dev/disk/by-slot/other/system -> ../../../vda4",
            "symlink /dev/disk/by-slot/bootconfig -> ../../vda1",
            "symlink /dev/disk/by-slot/persistent -> ../../vda6",
        ]
    );
    assert_eq!(
        sys.calls[..3],
        [
            "create-dir-all /dev/disk/by-slot/active",
            "remove-file /dev/disk/by-slot/active/boot",
            "symlink /dev/disk/by-slot/active/boot -> ../../../vda3",
        ]
    );
}

#[test]
fn mount_root_mounts_the_system_read_only_and_wants_its_init() {
    let mut sys = Fake::default();
    sys.add_exec("/sysroot/sbin/init");
    let mut boot = rpi_boot(&mut sys);
    mount_root(&mut boot, Slot::A, "/sbin/init").unwrap();
    assert_eq!(
        boot.report.handoff.mounts,
        [crate::handoff::MountRecord {
            what: "/dev/vda4".into(),
            target: "/".into(),
            fstype: "ext4".into(),
            options: "ro".into()
        }]
    );
    assert_eq!(
        sys.calls[..2],
        [
            "create-dir-all /sysroot",
            "mount /dev/vda4 /sysroot ext4 ro "
        ]
    );
    // No init there: the slot cannot be used, and nothing is recorded.
    let mut boot = rpi_boot(&mut sys);
    let cause = mount_root(&mut boot, Slot::B, "/sbin/missing").unwrap_err();
    assert!(cause.starts_with("no executable /sbin/missing"), "{cause}");
    assert!(boot.report.handoff.mounts.is_empty());
    // Nor a system partition.
    let mut sys = Fake::default();
    let mut boot = rpi_boot(&mut sys);
    boot.resolved.system_b = None;
    assert!(mount_root(&mut boot, Slot::B, "/sbin/init").is_err());
    assert!(sys.calls.is_empty(), "{:?}", sys.calls);
}

/// A slot whose system sits behind a device-mapper target (as LUKS and
/// dm-verity will put it) and has no init: the target is taken down again, so
/// the other slot, or the next boot, finds nothing of it mapped.
#[test]
fn a_system_without_init_takes_its_mapped_device_down() {
    use crate::kernel::sys::DmLine;
    use crate::mount::plan;
    let table = vec![DmLine {
        start: 0,
        length: 2048,
        target: "linear".into(),
        params: "/dev/vda4 0".into(),
    }];
    let run = |sys: &mut Fake| {
        let mut boot = rpi_boot(sys);
        let system = boot.resolved.system(Slot::A).unwrap().node();
        let steps = plan::root_plan(
            &boot.config,
            &boot.roots,
            boot.resolved.system(Slot::A).unwrap(),
        );
        let steps = plan::map_device(steps, "system_a", &system, true, table.clone());
        mounts::run_root_plan(&mut boot, &steps, "/sbin/init", &system)
    };
    let mut sys = Fake::default();
    let cause = run(&mut sys).unwrap_err();
    assert!(cause.starts_with("no executable /sbin/init"), "{cause}");
    let created = sys
        .position("dm-create system_a ro 0 2048 linear /dev/vda4 0")
        .unwrap();
    let mounted = sys.position("mount /dev/dm-0 /sysroot ext4 ro ").unwrap();
    let unmounted = sys.position("umount /sysroot").unwrap();
    let removed = sys.position("dm-remove system_a").unwrap();
    assert!(
        created < mounted && mounted < unmounted && unmounted < removed,
        "{:#?}",
        sys.calls
    );
    assert!(sys.mapped.is_empty());
    // With its init the mapping stays: the system runs on it.
    let mut sys = Fake::default();
    sys.add_exec("/sysroot/sbin/init");
    run(&mut sys).unwrap();
    assert_eq!(sys.mapped.len(), 1);
    assert!(sys.calls_starting("dm-remove").is_empty());
}

#[test]
fn a_slot_that_cannot_be_used_is_unmounted_and_the_other_one_boots() {
    let mut sys = Fake::default();
    sys.add_exec("/sysroot/sbin/init");
    sys.files.insert(
        "/proc/self/mountinfo".into(),
        b"22 1 0:21 / / rw - rootfs rootfs rw\n\
          30 22 254:4 / /sysroot ro - ext4 /dev/vda4 ro\n\
          31 30 0:40 / /sysroot/run rw - tmpfs tmpfs rw\n"
            .to_vec(),
    );
    let mut boot = rpi_boot(&mut sys);
    boot.config.bootstate.backend = crate::config::BACKEND_NONE.into();
    // Both slots boot one kernel: the other slot's system mounts in this boot.
    boot.config.boot.slot_kernels = crate::config::SlotKernels::Shared;
    // Slot A's system does not mount.
    boot.sys.fail.push("mount /dev/vda4".into());
    let next = mount_a_slot(&mut boot, None, "/sbin/init").unwrap();
    assert_eq!(next, Next::Mount(Slot::B));
    assert_eq!(boot.report.kinds(), [kind::SLOT_UNUSABLE]);
    let a = sys.position("mount /dev/vda4 /sysroot ext4 ro ").unwrap();
    let b = sys.position("mount /dev/vda5 /sysroot ext4 ro ").unwrap();
    // Deepest first, between the two tries.
    let inner = sys.position("umount /sysroot/run detach").unwrap();
    let outer = sys.position("umount /sysroot detach").unwrap();
    assert!(a < inner && inner < outer && outer < b, "{:#?}", sys.calls);
}

/// Slot coherence: with a kernel per slot (rpi: boot_a and boot_b), the
/// firmware's word names the running slot's kernel; a decision for the
/// other slot restarts through the firmware and never mounts its system.
#[test]
fn the_other_slots_system_is_never_mounted_under_this_slots_kernel() {
    let setup = |sys: &mut Fake, dt_partition: Option<u32>| {
        sys.add_exec("/sysroot/sbin/init");
        if let Some(n) = dt_partition {
            sys.files
                .insert(crate::paths::DT_PARTITION.into(), n.to_be_bytes().to_vec());
        }
    };
    // The firmware booted boot_a (partition 2) and slot A's system does not
    // mount: slot B is decided, and boots through the firmware.
    let mut sys = Fake::default();
    setup(&mut sys, Some(2));
    let mut boot = rpi_boot(&mut sys);
    boot.config.bootstate.backend = crate::config::BACKEND_NONE.into();
    assert!(boot.config.kernels_per_slot(), "auto: two boot partitions");
    boot.sys.fail.push("mount /dev/vda4".into());
    let next = mount_a_slot(&mut boot, None, "/sbin/init").unwrap();
    assert_eq!(next, Next::Restart(Slot::B));
    assert!(
        sys.position("mount /dev/vda5").is_none(),
        "{:#?}",
        sys.calls
    );

    // slotinit.slot=b under slot A's kernel: the same.
    let mut sys = Fake::default();
    setup(&mut sys, Some(2));
    let mut boot = rpi_boot(&mut sys);
    boot.config.bootstate.backend = crate::config::BACKEND_NONE.into();
    boot.args.slot_override = Some(Slot::B);
    let next = mount_a_slot(&mut boot, None, "/sbin/init").unwrap();
    assert_eq!(next, Next::Restart(Slot::B));
    assert!(sys.calls_starting("mount /dev/vda").is_empty());
    // Restarting into it: no store to steer the firmware, a plain reboot.
    let mut boot = rpi_boot(&mut sys);
    let cause = restart_into(&mut boot, None, Slot::B);
    assert!(cause.starts_with("restart into slot b failed"), "{cause}");
    assert_eq!(sys.calls.last().map(String::as_str), Some("reboot"));

    // The firmware booted boot_b: slot B's kernel runs, slot B mounts.
    let mut sys = Fake::default();
    setup(&mut sys, Some(3));
    let mut boot = rpi_boot(&mut sys);
    boot.config.bootstate.backend = crate::config::BACKEND_NONE.into();
    let next = mount_a_slot(&mut boot, None, "/sbin/init").unwrap();
    assert_eq!(next, Next::Mount(Slot::B));
    assert!(boot.report.kinds().is_empty(), "{:?}", boot.report.kinds());

    // No firmware word: the decided slot mounts, with a warning of its kind.
    let mut sys = Fake::default();
    setup(&mut sys, None);
    let mut boot = rpi_boot(&mut sys);
    boot.config.bootstate.backend = crate::config::BACKEND_NONE.into();
    let next = mount_a_slot(&mut boot, None, "/sbin/init").unwrap();
    assert_eq!(next, Next::Mount(Slot::A));
    assert_eq!(boot.report.kinds(), [kind::SLOT_KERNEL]);
}

/// One row of the persistent degrade matrix.
struct Row {
    name: &'static str,
    setup: fn(&mut Fake, &mut crate::config::Config, &mut devices::Resolved),
    kinds: &'static [&'static str],
    degraded: bool,
    source: &'static str,
    /// Calls that must have been made, in this order.
    calls: &'static [&'static str],
    /// Calls that must not have been made.
    never: &'static [&'static str],
}

fn stored_id(sys: &mut Fake) {
    sys.files
        .insert(STORED_ID.into(), format!("{ID}\n").into_bytes());
}

const PERSISTENT_MOUNT: &str =
    "mount /dev/vda6 /sysroot/persistent ext4 rw,nosuid,nodev commit=60,errors=remount-ro";
const TMPFS_VAR: &str = "mount tmpfs /sysroot/var tmpfs rw,nosuid,nodev mode=0755";
const TRANSIENT_BIND: &str = "bind /run/slotinit/machine-id /sysroot/etc/machine-id";
const PERSISTENT_BIND: &str =
    "bind /sysroot/persistent/common/etc/machine-id /sysroot/etc/machine-id";

/// One row per way the persistent partition goes: see [`persistent_degrade_matrix`].
const DEGRADE_MATRIX: &[Row] = &[
    Row {
        name: "healthy",
        setup: |sys, _, _| stored_id(sys),
        kinds: &[],
        degraded: false,
        source: "persistent",
        calls: &[
            PERSISTENT_MOUNT,
            "statvfs /sysroot/persistent",
            PERSISTENT_BIND,
        ],
        never: &[TMPFS_VAR, "run "],
    },
    Row {
        name: "missing",
        setup: |_, _, resolved| resolved.persistent = None,
        kinds: &[kind::PERSISTENT_MISSING],
        degraded: true,
        source: "generated-transient",
        calls: &[
            TMPFS_VAR,
            "write /run/slotinit/machine-id 444",
            TRANSIENT_BIND,
        ],
        never: &["mount /dev/vda6"],
    },
    Row {
        name: "fsck failed",
        setup: |sys, config, _| {
            config.persistent.fsck = true;
            sys.exit.insert("/sbin/e2fsck".into(), Some(4));
        },
        kinds: &[kind::PERSISTENT_FSCK],
        degraded: true,
        source: "generated-transient",
        calls: &["run /sbin/e2fsck -p /dev/vda6", TMPFS_VAR, TRANSIENT_BIND],
        never: &["mount /dev/vda6"],
    },
    Row {
        name: "fsck killed",
        setup: |sys, config, _| {
            config.persistent.fsck = true;
            sys.exit.insert("/sbin/e2fsck".into(), None);
        },
        kinds: &[kind::PERSISTENT_FSCK],
        degraded: true,
        source: "generated-transient",
        calls: &["run /sbin/e2fsck -p /dev/vda6", TMPFS_VAR],
        never: &["mount /dev/vda6"],
    },
    Row {
        name: "fsck passed",
        setup: |sys, config, _| {
            config.persistent.fsck = true;
            sys.exit.insert("/sbin/e2fsck".into(), Some(1));
            stored_id(sys);
        },
        kinds: &[],
        degraded: false,
        source: "persistent",
        calls: &[
            "run /sbin/e2fsck -p /dev/vda6",
            PERSISTENT_MOUNT,
            PERSISTENT_BIND,
        ],
        never: &[TMPFS_VAR],
    },
    Row {
        name: "mount failed, no checker",
        setup: |sys, _, _| sys.fail.push("mount /dev/vda6".into()),
        kinds: &[kind::PERSISTENT_MOUNT],
        degraded: true,
        source: "generated-transient",
        calls: &[
            PERSISTENT_MOUNT,
            "exists /sbin/e2fsck",
            TMPFS_VAR,
            TRANSIENT_BIND,
        ],
        never: &["run "],
    },
    Row {
        name: "mount failed, repaired",
        setup: |sys, _, _| {
            sys.fail_once.push("mount /dev/vda6".into());
            sys.add_exec("/sbin/e2fsck");
            sys.exit.insert("/sbin/e2fsck".into(), Some(1));
            stored_id(sys);
        },
        kinds: &[kind::PERSISTENT_REPAIR],
        degraded: false,
        source: "persistent",
        calls: &[
            PERSISTENT_MOUNT,
            "run /sbin/e2fsck -p /dev/vda6",
            PERSISTENT_MOUNT,
            PERSISTENT_BIND,
        ],
        never: &[TMPFS_VAR, "run /sbin/e2fsck -y"],
    },
    Row {
        name: "mount failed, repair failed",
        setup: |sys, _, _| {
            sys.fail.push("mount /dev/vda6".into());
            sys.add_exec("/sbin/e2fsck");
            sys.exit.insert("/sbin/e2fsck".into(), Some(4));
        },
        kinds: &[kind::PERSISTENT_MOUNT, kind::PERSISTENT_REPAIR],
        degraded: true,
        source: "generated-transient",
        calls: &[
            PERSISTENT_MOUNT,
            "run /sbin/e2fsck -p /dev/vda6",
            "run /sbin/e2fsck -y /dev/vda6",
            TMPFS_VAR,
        ],
        never: &[],
    },
    Row {
        name: "read-only",
        setup: |sys, _, _| {
            sys.read_only.insert("/sysroot/persistent".into());
            stored_id(sys);
        },
        kinds: &[kind::PERSISTENT_READ_ONLY],
        degraded: true,
        source: "persistent-copy",
        calls: &[
            PERSISTENT_MOUNT,
            "statvfs /sysroot/persistent",
            TMPFS_VAR,
            "read /sysroot/persistent/common/etc/machine-id",
            "write /run/slotinit/machine-id 444",
            TRANSIENT_BIND,
        ],
        never: &["bind /sysroot/persistent/home"],
    },
    Row {
        name: "a bind failed",
        setup: |sys, _, _| {
            sys.fail.push("bind /sysroot/persistent/home".into());
            stored_id(sys);
        },
        kinds: &[kind::PERSISTENT_STEP, kind::BIND_REPLACED],
        degraded: false,
        source: "persistent",
        calls: &[
            "bind /sysroot/persistent/home /sysroot/home",
            "mount tmpfs /sysroot/home tmpfs rw,nosuid,nodev mode=0755",
            PERSISTENT_BIND,
        ],
        never: &[TMPFS_VAR, TRANSIENT_BIND],
    },
    Row {
        name: "the machine-id failed",
        setup: |sys, _, _| sys.fail.push(format!("write {STORED_ID}")),
        kinds: &[kind::MACHINE_ID],
        degraded: true,
        source: "generated-transient",
        calls: &[
            PERSISTENT_MOUNT,
            "write /sysroot/persistent/common/etc/machine-id 444",
            "read /sysroot/persistent/common/etc/machine-id",
            "write /run/slotinit/machine-id 444",
            TRANSIENT_BIND,
        ],
        never: &[TMPFS_VAR, PERSISTENT_BIND],
    },
];

/// The persistent partition missing, its check failing, its mount failing
/// (repaired or not), read-only, a bind failing, the machine-id failing: what
/// the stage asks the kernel, the error kinds, `persistent_degraded` and
/// where the machine-id came from.
#[test]
fn persistent_degrade_matrix() {
    for row in DEGRADE_MATRIX {
        let mut sys = Fake::default();
        let mut config = crate::config::Config::default();
        let mut resolved = devices::resolve(&rpi_disk("vda"), &config.partitions);
        (row.setup)(&mut sys, &mut config, &mut resolved);
        let mut boot = Boot::new(&mut sys);
        boot.config = config;
        boot.resolved = resolved;
        mount_persistent(&mut boot, Slot::A);
        let h = &boot.report.handoff;
        let name = row.name;
        assert_eq!(boot.report.kinds(), row.kinds, "{name}");
        assert_eq!(h.persistent_degraded, row.degraded, "{name}");
        assert_eq!(h.machine_id_source.as_deref(), Some(row.source), "{name}");
        assert_eq!(h.slot_dir.as_deref(), Some("system_a"), "{name}");
        if row.source.ends_with("persistent") || row.source == "persistent-copy" {
            assert_eq!(h.machine_id.as_deref(), Some(ID), "{name}");
        }
        let mounts = h.mounts.clone();
        let mut at = 0;
        for call in row.calls {
            let found = sys.calls[at..].iter().position(|c| c.starts_with(call));
            assert!(
                found.is_some(),
                "{name}: {call:?} after #{at} in {:#?}",
                sys.calls
            );
            at += found.unwrap_or(0) + 1;
        }
        for call in row.never {
            assert!(
                sys.calls_starting(call).is_empty(),
                "{name}: {call:?} in {:#?}",
                sys.calls
            );
        }
        // The handoff lists the persistent mount only when it was made.
        let listed = mounts
            .iter()
            .any(|m| m.what == "/dev/vda6" && m.target == "/persistent");
        let mounted = !row.kinds.contains(&kind::PERSISTENT_MOUNT)
            && !row.kinds.contains(&kind::PERSISTENT_MISSING)
            && !row.kinds.contains(&kind::PERSISTENT_FSCK);
        assert_eq!(listed, mounted, "{name}: {mounts:?}");
    }
}

#[test]
fn handoff_stage_writes_what_the_boot_did() {
    let mut sys = Fake::default();
    sys.files.insert(
        "/proc/self/status".into(),
        b"Name:\tinit\nVmHWM:\t  1234 kB\n".to_vec(),
    );
    let mut boot = rpi_boot(&mut sys);
    boot.args.init_argv = vec!["single".into()];
    boot.report.stage("setup");
    setup::finish_handoff(&mut boot, "/sbin/init");
    write_handoff(boot.sys, &boot.report.handoff);
    let h = handoff_json(&sys);
    assert_eq!(h["init"], "/sbin/init");
    assert_eq!(h["init_args"], serde_json::json!(["single"]));
    assert_eq!(h["vmhwm_kb"], 1234);
    assert_eq!(
        (h["cpu_user_us"].clone(), h["cpu_sys_us"].clone()),
        (1000.into(), 2000.into())
    );
    assert_eq!(
        sys.calls,
        [
            "read-file /proc/self/status",
            "getrusage",
            "create-dir-all /run/slotinit",
            "write-file /run/slotinit/handoff.json",
        ]
    );
    // A handoff that cannot be written is logged; the boot goes on.
    let mut sys = Fake {
        fail: vec!["write-file".into()],
        ..Fake::default()
    };
    write_handoff(&mut sys, &crate::handoff::Handoff::new());
    assert!(!sys.files.contains_key(Path::new(HANDOFF_PATH)));
}

#[test]
fn fatal_path_writes_the_handoff_then_tries_the_shell_then_reboots() {
    let mut sys = Fake::default();
    sys.add_exec("/bin/busybox");
    let mut boot = rpi_boot(&mut sys);
    boot.args.emergency_shell = true;
    boot.config.boot.reboot_delay_s = 7;
    let e = fatal_until_reboot(&mut boot, "no slot");
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EPERM),
        "the fake's reboot fails"
    );
    assert_eq!(
        sys.calls,
        [
            "create-dir-all /run/slotinit",
            "write-file /run/slotinit/handoff.json",
            "exists /bin/sh",
            "exists /bin/busybox",
            "reset-signals",
            "execv /bin/busybox /bin/sh -i",
            "sleep 7000ms",
            "reboot",
        ]
    );
    let h = handoff_json(&sys);
    assert_eq!(h["errors"][0]["kind"], kind::FATAL);
    // Without slotinit.emergency=shell: straight to the reboot.
    let mut sys = Fake::default();
    sys.add_exec("/bin/sh");
    let mut boot = rpi_boot(&mut sys);
    fatal_until_reboot(&mut boot, "no slot");
    assert_eq!(
        sys.calls,
        [
            "create-dir-all /run/slotinit",
            "write-file /run/slotinit/handoff.json",
            "sleep 10000ms",
            "reboot",
        ]
    );
}

/// A machine for a whole boot on the fake: the rpi disk in sysfs, a system
/// with its init, a machine-id on persistent, backend "none", the device
/// tree naming boot_a, `cmdline`.
fn whole_machine(cmdline: &str, config: &str) -> Fake {
    let mut sys = Fake::default();
    sys.files
        .insert("/proc/cmdline".into(), cmdline.as_bytes().to_vec());
    sys.files.insert(
        CONFIG_PATH.into(),
        format!("[bootstate]\nbackend = \"none\"\n{config}").into_bytes(),
    );
    sys.files.insert(
        crate::paths::LOAD_LIST.into(),
        b"# slotinit modules.load v2\n/lib/modules/i6300esb.ko early\n/lib/modules/ext4.ko\n"
            .to_vec(),
    );
    sysfs(&mut sys, "vda");
    sys.add_exec("/sysroot/sbin/init");
    stored_id(&mut sys);
    // The firmware booted boot_a: slot A's kernel runs (slot coherence).
    sys.files.insert(
        crate::paths::DT_PARTITION.into(),
        2u32.to_be_bytes().to_vec(),
    );
    sys
}

/// Runs every stage on `sys` up to the exec of the system's init (which the
/// fake fails): the cause and the handoff.
fn whole_boot(sys: &mut Fake) -> (String, crate::handoff::Handoff) {
    let mut boot = Boot::new(sys);
    let cause = boot_system(&mut boot, ["/init".into()], |_| {});
    (cause, boot.report.handoff.clone())
}

/// `slotinit.watchdog=20`: armed right after the modules (its driver is one
/// of them), fed at the end of every later stage, left running (closed
/// without the magic V) after the handoff is written and before the exec.
#[test]
fn a_whole_boot_arms_the_watchdog_feeds_every_stage_and_leaves_it_running() {
    let mut sys = whole_machine("slotinit.watchdog=20", "");
    let (cause, h) = whole_boot(&mut sys);
    assert!(cause.contains("cannot exec /sbin/init"), "{cause}");
    let stages: Vec<&str> = h.timings_us.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        stages,
        [
            "setup",
            "modules",
            "watchdog",
            "devices",
            "modules-late",
            "state",
            "decision",
            "links",
            "mounts",
            "total"
        ]
    );
    let module = sys
        .position("finit_module /lib/modules/i6300esb.ko \"\"")
        .unwrap();
    let early = sys.position("wait-modules early").unwrap();
    let open = sys.position("watchdog-open /dev/watchdog").unwrap();
    let all = sys.position("wait-modules all").unwrap();
    let state = sys.position("mount /dev/vda1").unwrap_or(usize::MAX);
    assert!(module < early && early < open, "{:#?}", sys.calls);
    assert!(open < all && all < state, "{:#?}", sys.calls);
    assert_eq!(sys.calls[open + 3], "watchdog-settimeout 20");
    // One keepalive when armed, one at the end of each of the seven stages
    // after it, one at the handover (the disk was there at once: no wait).
    assert_eq!(sys.calls_starting("watchdog-keepalive").len(), 1 + 7 + 1);
    let handoff = sys
        .position("write-file /run/slotinit/handoff.json")
        .unwrap();
    let close = sys.position("watchdog-close").unwrap();
    let exec = sys
        .calls
        .iter()
        .position(|c| c.starts_with("execv "))
        .unwrap();
    assert!(handoff < close && close < exec, "{:#?}", sys.calls);
    assert!(
        sys.calls_starting("watchdog-close magic").is_empty(),
        "never a magic close"
    );
    let last_feed = sys
        .calls
        .iter()
        .rposition(|c| c.starts_with("watchdog-keepalive"))
        .unwrap();
    assert_eq!(last_feed + 1, close, "fed right before the handover");
    let w = h.watchdog.unwrap();
    assert_eq!((w.device.as_str(), w.requested_s), ("/dev/watchdog", 20));
    assert_eq!((w.timeout_s, w.running, w.error), (Some(20), true, None));
    assert_eq!(w.last_reset, crate::kernel::watchdog::LastReset::Unknown);
    assert_eq!(w.identity.as_deref(), Some("fake"));
    assert!(h.warnings.is_empty(), "{:?}", h.warnings);
}

/// The config arms it, the cmdline's 0 turns it off; without either
/// nothing touches a watchdog and the stages are the usual ones.
#[test]
fn the_cmdline_overrides_the_configured_watchdog() {
    let mut sys = whole_machine(
        "",
        "[boot]\nwatchdog_s = 15\nwatchdog_device = \"/dev/watchdog1\"\n",
    );
    let (_, h) = whole_boot(&mut sys);
    assert_eq!(
        sys.calls_starting("watchdog-")[..4],
        [
            "watchdog-open /dev/watchdog1",
            "watchdog-getsupport",
            "watchdog-getbootstatus",
            "watchdog-settimeout 15"
        ]
    );
    assert_eq!(h.watchdog.unwrap().requested_s, 15);
    let mut sys = whole_machine("slotinit.watchdog=0", "[boot]\nwatchdog_s = 15\n");
    let (_, h) = whole_boot(&mut sys);
    assert!(
        sys.calls_starting("watchdog-").is_empty(),
        "{:#?}",
        sys.calls
    );
    assert_eq!(h.watchdog, None);
    let mut sys = whole_machine("", "");
    let (_, h) = whole_boot(&mut sys);
    assert!(sys.calls_starting("watchdog-").is_empty());
    assert!(!h.timings_us.iter().any(|(s, _)| s == "watchdog"));
}

/// No device (the driver is not in the initramfs): a warning naming it, the
/// record says why, and the boot goes on to the exec.
#[test]
fn a_missing_watchdog_is_a_warning_and_the_boot_goes_on() {
    let mut sys = whole_machine("slotinit.watchdog=20", "");
    sys.errno.push(("watchdog-open".into(), libc::ENOENT));
    let (cause, h) = whole_boot(&mut sys);
    assert!(cause.contains("cannot exec /sbin/init"), "{cause}");
    assert_eq!(h.warnings.len(), 1, "{:?}", h.warnings);
    assert_eq!(h.warnings[0].kind, kind::WATCHDOG);
    assert!(
        h.warnings[0].message.contains("/dev/watchdog"),
        "{}",
        h.warnings[0]
    );
    let w = h.watchdog.unwrap();
    assert!(!w.running);
    assert!(w.error.unwrap().contains("No such file"));
    // Waited for (kernel::watchdog::APPEAR_WAIT), opened again and again, nothing else.
    let opens = sys.calls_starting("watchdog-");
    assert!(opens.len() > 1, "{opens:?}");
    assert!(
        opens.iter().all(|c| *c == "watchdog-open /dev/watchdog"),
        "{opens:?}"
    );
    assert!(sys.calls.iter().any(|c| c.starts_with("execv /sbin/init")));
}

/// A driver without WDIOF_SETTIMEOUT runs with its own timeout: a warning,
/// the record has the timeout it runs with, and the last reset as told.
#[test]
fn a_driver_without_settimeout_keeps_its_own() {
    let mut sys = whole_machine("slotinit.watchdog=20", "");
    sys.watchdog.info.options = crate::kernel::watchdog::WDIOF_MAGICCLOSE
        | crate::kernel::watchdog::WDIOF_KEEPALIVEPING
        | crate::kernel::watchdog::WDIOF_CARDRESET;
    sys.watchdog.timeout = 60;
    let (_, h) = whole_boot(&mut sys);
    assert!(sys.calls_starting("watchdog-settimeout").is_empty());
    assert_eq!(h.warnings.len(), 1, "{:?}", h.warnings);
    assert_eq!(h.warnings[0].kind, kind::WATCHDOG);
    let w = h.watchdog.unwrap();
    assert_eq!((w.timeout_s, w.running), (Some(60), true));
    assert_eq!(w.last_reset, crate::kernel::watchdog::LastReset::Other);
}

/// The fatal path keeps feeding through the reboot delay (so the delay is the
/// configured one), and once the reboot fails the halt stops feeding: the
/// watchdog resets the device. The emergency shell stops it first.
#[test]
fn the_fatal_path_feeds_through_the_delay_and_the_shell_stops_the_watchdog() {
    let mut sys = Fake::default();
    let mut boot = rpi_boot(&mut sys);
    boot.args.watchdog_s = Some(4);
    boot.config.boot.reboot_delay_s = 5;
    assert!(watchdog::arm(&mut boot));
    assert_eq!(watchdog::running_timeout(&boot), Some(4));
    boot.sys.calls.clear();
    fatal_until_reboot(&mut boot, "no slot");
    let tail: Vec<&str> = sys.calls[2..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "sleep 2000ms",
            "watchdog-keepalive ioctl",
            "sleep 2000ms",
            "watchdog-keepalive ioctl",
            "sleep 1000ms",
            "watchdog-keepalive ioctl",
            "reboot",
        ]
    );
    // The emergency shell: the magic close, then the exec.
    let mut sys = Fake::default();
    sys.add_exec("/bin/sh");
    let mut boot = rpi_boot(&mut sys);
    boot.args.watchdog_s = Some(4);
    boot.args.emergency_shell = true;
    watchdog::arm(&mut boot);
    fatal_until_reboot(&mut boot, "no slot");
    assert_eq!(watchdog::running_timeout(&boot), None);
    let close = sys.position("watchdog-close magic").unwrap();
    let exec = sys.position("execv /bin/sh /bin/sh -i").unwrap();
    assert!(close < exec, "{:#?}", sys.calls);
    // No shell: the watchdog is not stopped, the delay is fed.
    let mut sys = Fake::default();
    let mut boot = rpi_boot(&mut sys);
    boot.args.watchdog_s = Some(4);
    boot.args.emergency_shell = true;
    watchdog::arm(&mut boot);
    fatal_until_reboot(&mut boot, "no slot");
    assert!(sys.calls_starting("watchdog-close").is_empty());
}

/// The persistent partition's check may outlast the watchdog's timeout: with
/// a watchdog armed it runs fed (while it makes progress), without one as
/// before.
#[test]
fn the_persistent_check_runs_fed_while_a_watchdog_is_armed() {
    for armed in [true, false] {
        let mut sys = Fake::default();
        stored_id(&mut sys);
        let mut boot = rpi_boot(&mut sys);
        boot.config.persistent.fsck = true;
        if armed {
            boot.args.watchdog_s = Some(10);
            assert!(watchdog::arm(&mut boot));
        }
        mount_persistent(&mut boot, Slot::A);
        assert!(!boot.report.handoff.persistent_degraded);
        let (fed, plain) = (
            sys.calls_starting("run-fed /sbin/e2fsck -p /dev/vda6"),
            sys.calls_starting("run /sbin/e2fsck -p /dev/vda6"),
        );
        assert_eq!(
            (fed.len(), plain.len()),
            if armed { (1, 0) } else { (0, 1) }
        );
    }
}

/// An 8 MiB ext4 with veritysetup's tree appended after it, made by the
/// real tools: (the image, its root hash).
fn verity_image(dir: &Path) -> (Vec<u8>, String) {
    let img = dir.join("system.img");
    let run = |program: &str, args: &[&str]| {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} (tools/install-deps installs it)"));
        assert!(out.status.success(), "{program} {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let path = img.to_str().unwrap();
    run("mkfs.ext4", &["-q", "-F", "-b", "4096", path, "8M"]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(9 << 20)
        .unwrap();
    let out = run(
        "veritysetup",
        &[
            "format",
            "--data-blocks=2048",
            "--hash-offset=8388608",
            path,
            path,
        ],
    );
    let root = out
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap()
        .trim()
        .to_string();
    (std::fs::read(&img).unwrap(), root)
}

/// `[verity] mode = "required"` on the rpi layout, the root hash on the
/// cmdline (kernels per slot: the cmdline is the running slot's).
fn verity_boot<'s>(sys: &'s mut Fake, cmdline: &str) -> Boot<'s, Fake> {
    let mut boot = rpi_boot(sys);
    boot.config = crate::config::Config::parse("[verity]\nmode = \"required\"\n", "t").unwrap();
    boot.cmdline = crate::kernel::cmdline::Cmdline::parse(cmdline.as_bytes());
    boot
}

#[test]
fn a_verified_system_mounts_through_its_target_and_restarts_on_corruption_once_it_boots() {
    let dir = tempfile::tempdir().unwrap();
    let (image, root) = verity_image(dir.path());
    let mut sys = Fake::default();
    sys.add_exec("/sysroot/sbin/init");
    sys.files.insert("/dev/vda4".into(), image.clone());
    // What the target reads: the verified data (the fake does not verify).
    sys.files
        .insert("/dev/dm-0".into(), image[..8 << 20].to_vec());
    let mut boot = verity_boot(&mut sys, &format!("slotinit.roothash={root}"));
    mount_root(&mut boot, Slot::A, "/sbin/init").unwrap();
    let record = boot.report.handoff.verity.clone().unwrap();
    assert_eq!(record.root_hash, root);
    assert_eq!(record.name, "system_a_verity");
    assert_eq!(record.on_corruption, "restart");
    let created = sys.calls_starting("dm-create system_a_verity ro 0 16384 verity 1 /dev/vda4 /dev/vda4 4096 4096 2048 2049 sha256 ");
    assert_eq!(created.len(), 1, "{:#?}", sys.calls);
    assert!(
        created[0].contains(&root) && !created[0].contains("restart"),
        "{}",
        created[0]
    );
    let mounted = sys
        .position("mount /dev/mapper/system_a_verity /sysroot ext4 ro ")
        .unwrap();
    let read = sys.position("open-disk /dev/dm-0").unwrap();
    let reloaded = sys
        .calls
        .iter()
        .position(|c| {
            c.starts_with("dm-reload system_a_verity ro ")
                && c.ends_with(" 1 restart_on_corruption")
        })
        .unwrap();
    assert!(read < mounted && mounted < reloaded, "{:#?}", sys.calls);
}

#[test]
fn a_slot_whose_verity_fails_is_unusable_with_the_reason_and_nothing_stays_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let (image, root) = verity_image(dir.path());
    // Block 0 does not read through the target (a tampered superblock or a
    // wrong root hash: dm-verity's EIO).
    let mut sys = Fake::default();
    sys.add_exec("/sysroot/sbin/init");
    sys.files.insert("/dev/vda4".into(), image.clone());
    sys.fail.push("open-disk /dev/dm-0".into());
    let mut boot = verity_boot(&mut sys, &format!("roothash={root}"));
    let cause = mount_root(&mut boot, Slot::A, "/sbin/init").unwrap_err();
    assert!(cause.starts_with("verity_corrupted: /dev/vda4"), "{cause}");
    assert!(sys.mapped.is_empty());
    assert!(sys.calls_starting("mount ").is_empty(), "{:#?}", sys.calls);
    // A root hash for other data: refused at the tree's top block, nothing
    // mapped.
    let mut sys = Fake::default();
    sys.files.insert("/dev/vda4".into(), image.clone());
    let other = format!("{}0", &root[..63]);
    let other = if other == root {
        format!("{}1", &root[..63])
    } else {
        other
    };
    let mut boot = verity_boot(&mut sys, &format!("roothash={other}"));
    let cause = mount_root(&mut boot, Slot::A, "/sbin/init").unwrap_err();
    assert!(cause.starts_with("verity_corrupted: "), "{cause}");
    assert!(cause.contains("cmdline roothash="), "{cause}");
    drop(boot);
    assert!(
        sys.calls_starting("dm-create").is_empty(),
        "{:#?}",
        sys.calls
    );
    // Required, and no root hash anywhere: refused before anything is mapped.
    let mut sys = Fake::default();
    sys.files.insert("/dev/vda4".into(), image.clone());
    let mut boot = verity_boot(&mut sys, "");
    let cause = mount_root(&mut boot, Slot::A, "/sbin/init").unwrap_err();
    assert!(cause.starts_with("verity_missing: "), "{cause}");
    assert!(sys.calls_starting("dm-create").is_empty());
    // A partition without the tree (a plain ext4): missing, not mounted.
    let mut sys = Fake::default();
    let mut plain = image[..8 << 20].to_vec();
    plain.resize(9 << 20, 0);
    sys.files.insert("/dev/vda4".into(), plain);
    let mut boot = verity_boot(&mut sys, &format!("roothash={root}"));
    let cause = mount_root(&mut boot, Slot::A, "/sbin/init").unwrap_err();
    assert!(cause.starts_with("verity_missing: "), "{cause}");
    assert!(sys.calls_starting("dm-create").is_empty());
    // No init behind a verified system: unmounted, then the target goes.
    let mut sys = Fake::default();
    sys.files.insert("/dev/vda4".into(), image.clone());
    sys.files
        .insert("/dev/dm-0".into(), image[..8 << 20].to_vec());
    sys.files.insert(
        "/proc/self/mountinfo".into(),
        b"22 1 0:21 / / rw - rootfs rootfs rw\n30 22 253:0 / /sysroot ro - ext4 /dev/dm-0 ro\n"
            .to_vec(),
    );
    let mut boot = verity_boot(&mut sys, &format!("roothash={root}"));
    let cause = mount_root(&mut boot, Slot::A, "/sbin/init").unwrap_err();
    assert!(cause.starts_with("no executable /sbin/init"), "{cause}");
    let unmounted = sys.position("umount /sysroot detach").unwrap();
    let removed = sys.position("dm-remove system_a_verity").unwrap();
    assert!(unmounted < removed, "{:#?}", sys.calls);
    assert!(sys.mapped.is_empty());
}

/// A tests/fixtures/luks2 container (made by cryptsetup 2.6.1), unzipped.
fn luks_fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/luks2/{name}.img.gz",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = std::process::Command::new("gzip")
        .args(["-dc", &path])
        .output()
        .unwrap();
    assert!(out.status.success(), "gzip -dc {path}");
    out.stdout
}

/// A 4 MiB disk image with a GPT made by sgdisk: system_a, system_b and
/// persistent, as rpi-image-gen's `crypt` map puts them inside osdata_crypt.
fn inner_gpt(dir: &Path) -> Vec<u8> {
    let img = dir.join("inner.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let out = std::process::Command::new("sgdisk")
        .args([
            "-n",
            "1:2048:+1M",
            "-c",
            "1:system_a",
            "-n",
            "2:0:+1M",
            "-c",
            "2:system_b",
        ])
        .args(["-n", "3:0:0", "-c", "3:persistent"])
        .arg(&img)
        .output()
        .expect("sgdisk (gdisk, tools/install-deps)");
    assert!(out.status.success(), "{out:?}");
    std::fs::read(&img).unwrap()
}

/// rpi-image-gen's `crypt` map on the fake: the boot partitions clear, the
/// container (vda4, found by its label) holding the rest.
fn crypt_boot<'s>(sys: &'s mut Fake, key: &[u8]) -> (Boot<'s, Fake>, Vec<devices::Partition>) {
    let dir = tempfile::tempdir().unwrap();
    sys.files
        .insert("/dev/vda4".into(), luks_fixture("xts512-pbkdf2"));
    sys.files.insert("/dev/dm-0".into(), inner_gpt(dir.path()));
    sys.files.insert(
        "/sys/block/dm-0/queue/logical_block_size".into(),
        b"512\n".to_vec(),
    );
    sys.files
        .insert("/etc/slotinit/osdata.key".into(), key.to_vec());
    let mut boot = Boot::new(sys);
    boot.config = crate::config::Config::parse(
        "[[crypt]]\nname = \"osdata_crypt\"\ndevice = { label = \"OSDATA_CRYPT\" }\n\
         members = [\"system_a\", \"system_b\", \"persistent\"]\nkey = \"file:/etc/slotinit/osdata.key\"\n",
        "t",
    )
    .unwrap();
    let outer: Vec<_> = rpi_disk("vda")[..3]
        .iter()
        .cloned()
        .chain([devices::fixtures::part("vda4", "vda", 4, Some("osdata"))])
        .collect();
    (boot, outer)
}

#[test]
fn the_crypt_stage_unlocks_a_container_by_label_and_resolves_the_members_in_its_gpt() {
    let mut sys = Fake::default();
    let (mut boot, outer) = crypt_boot(&mut sys, b"correct horse battery staple");
    let names = crypt::outer_names(&boot.config);
    let mut resolved = devices::resolve(&outer, &names);
    assert!(resolved.problems.is_empty(), "{:?}", resolved.problems);
    crypt::open_containers(&mut boot, &outer, &mut resolved);
    assert!(
        boot.report.handoff.errors.is_empty(),
        "{:?}",
        boot.report.handoff.errors
    );
    assert_eq!(
        resolved.system_a.as_ref().unwrap().dev,
        "mapper/osdata_cryptp1"
    );
    assert_eq!(
        resolved.system_b.as_ref().unwrap().dev,
        "mapper/osdata_cryptp2"
    );
    assert_eq!(
        resolved.persistent.as_ref().unwrap().node(),
        Path::new("/dev/mapper/osdata_cryptp3")
    );
    assert_eq!(resolved.boot_a.as_ref().unwrap().dev, "vda2");
    let record = &boot.report.handoff.crypt[0];
    assert_eq!(
        (record.device.as_str(), record.error.as_ref()),
        ("/dev/vda4", None)
    );
    assert_eq!(crypt::both_systems_lost(&boot.config, &resolved), None);
    drop(boot);
    // The volume key cryptsetup's luksDump --dump-volume-key printed, the
    // data segment (32 sectors) after the 1 MiB of header and keyslots.
    let key = include_str!("../../tests/fixtures/luks2/xts512-pbkdf2.key").trim();
    let container =
        format!("dm-create osdata_crypt rw 0 32 crypt aes-xts-plain64 {key} 0 /dev/vda4 2048");
    let created = sys
        .position(&container)
        .unwrap_or_else(|| panic!("{:#?}", sys.calls));
    let p1 = sys
        .position("dm-create osdata_cryptp1 rw 0 2048 linear /dev/dm-0 2048")
        .unwrap();
    let p3 = sys.calls_starting("dm-create osdata_cryptp3 rw 0 ");
    assert_eq!(p3.len(), 1);
    assert!(created < p1);
    assert!(sys
        .position("symlink /dev/mapper/osdata_cryptp2 -> ../dm-2")
        .is_some());
}

#[test]
fn a_wrong_key_opens_nothing_and_names_the_container() {
    let mut sys = Fake::default();
    let (mut boot, outer) = crypt_boot(&mut sys, b"correct horse battery stapler");
    let names = crypt::outer_names(&boot.config);
    let mut resolved = devices::resolve(&outer, &names);
    crypt::open_containers(&mut boot, &outer, &mut resolved);
    assert_eq!(boot.report.kinds(), [kind::CRYPT]);
    let message = &boot.report.handoff.errors[0].message;
    assert!(message.starts_with("crypt osdata_crypt: "), "{message}");
    assert!(message.contains("no keyslot"), "{message}");
    assert!(resolved.system_a.is_none() && resolved.persistent.is_none());
    let cause = crypt::both_systems_lost(&boot.config, &resolved).unwrap();
    assert!(cause.contains("osdata_crypt"), "{cause}");
    drop(boot);
    assert!(
        sys.calls_starting("dm-create").is_empty(),
        "{:#?}",
        sys.calls
    );
}
