//! Every fixed path slotinit reads or writes, in one place.

/// The config baked into the initramfs.
pub(crate) const CONFIG_PATH: &str = "/etc/slotinit.toml";
/// Kernel modules the init loads, one per line, in order.
pub(crate) const LOAD_LIST: &str = "/etc/slotinit/modules.load";
/// Where the system is mounted before the switch.
pub(crate) const SYSROOT: &str = "/sysroot";
/// slotinit's directory on /run, which moves into the booted system.
pub(crate) const RUN_DIR: &str = "/run/slotinit";
/// The config the init used, for the subcommands after boot.
pub(crate) const RUN_CONFIG: &str = "/run/slotinit/config.toml";
/// Where the init mounts the partition holding the boot state while it works.
pub(crate) const STATE_MOUNT: &str = "/run/slotinit/bootstate";
/// What the init tells the booted system (`handoff::Handoff` as JSON).
pub(crate) const HANDOFF_PATH: &str = "/run/slotinit/handoff.json";
/// The device-tree property the Raspberry Pi firmware fills with the partition
/// number it booted from (u32, big-endian).
pub(crate) const DT_PARTITION: &str = "/proc/device-tree/chosen/bootloader/partition";
/// The Raspberry Pi firmware's boot mode (1 SD/eMMC, 6 NVMe), for the slot map.
pub(crate) const DT_BOOT_MODE: &str = "/proc/device-tree/chosen/bootloader/boot-mode";
