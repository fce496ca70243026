//! `slotinit initramfs-needs CONFIG`: what the initramfs must carry for a
//! config, for `initramfs/build`: the kernel modules its boot uses (and no
//! more) and the programs it runs. The builder resolves each module name (or
//! alias) with the kernel's own metadata (`modprobe --show-depends`) and
//! writes the load list the init reads (`kernel::modules`).

use crate::config::{Config, PartRef, VerityMode};
use std::fmt;

/// One thing the initramfs must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// A module by name or alias, as modprobe takes it.
    Module {
        name: String,
        /// Loaded before the disk is waited for (a watchdog driver).
        early: bool,
        /// One implementation among several (the builder keeps every one the
        /// kernel has; the init does not mind one the CPU cannot run).
        optional: bool,
        why: Vec<String>,
    },
    /// A program the init runs, at its path in the initramfs.
    File { path: String, why: String },
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Module {
                name,
                early,
                optional,
                why,
            } => {
                write!(f, "module {name}")?;
                if *early {
                    f.write_str(" early")?;
                }
                if *optional {
                    f.write_str(" optional")?;
                }
                write!(f, " # {}", why.join(", "))
            }
            Need::File { path, why } => write!(f, "file {path} # {why}"),
        }
    }
}

/// Collects module needs, one line per module, the reasons merged.
#[derive(Default)]
struct Needs(Vec<Need>);

impl Needs {
    fn module(&mut self, name: &str, why: &str) {
        self.add(name, false, false, why);
    }

    fn add(&mut self, name: &str, early: bool, optional: bool, why: &str) {
        let known = self.0.iter_mut().find_map(|need| match need {
            Need::Module {
                name: n,
                early,
                optional,
                why,
            } if n == name => Some((early, optional, why)),
            _ => None,
        });
        match known {
            Some((e, o, w)) => {
                *e |= early;
                *o &= optional;
                if !w.iter().any(|x| x == why) {
                    w.push(why.into());
                }
            }
            None => self.0.push(Need::Module {
                name: name.into(),
                early,
                optional,
                why: vec![why.into()],
            }),
        }
    }

    /// A filesystem's module, and for FAT the code pages its mount loads
    /// (Linux's fat_fill_super loads the `codepage` (437) and, for vfat, the
    /// `iocharset`: Debian's CONFIG_FAT_DEFAULT_IOCHARSET is "ascii").
    fn filesystem(&mut self, fstype: &str, why: &str) {
        match fstype {
            "" | "tmpfs" | "proc" | "sysfs" | "devtmpfs" => {}
            "vfat" | "msdos" | "fat" => {
                self.module(fstype, why);
                self.module("nls_cp437", &format!("{why} ({fstype}'s codepage 437)"));
                if fstype == "vfat" {
                    self.module("nls_ascii", &format!("{why} (vfat's iocharset ascii)"));
                }
            }
            _ => self.module(fstype, why),
        }
    }
}

/// What `config`'s boot needs in the initramfs, in the order the builder
/// lists modules (the early ones are put first by the builder).
pub(crate) fn needs(config: &Config) -> Vec<Need> {
    let mut n = Needs::default();
    let boot = &config.boot;
    if !boot.watchdog_module.is_empty() {
        n.add(&boot.watchdog_module, true, false, "boot.watchdog_module");
    }
    let has = |member: &str| {
        config
            .partitions
            .member(member)
            .is_some_and(|spec| spec.reference() != PartRef::Absent)
    };
    if has("system_a") || has("system_b") {
        n.filesystem(&config.system.fstype, "system.fstype");
    }
    if has("persistent") {
        n.filesystem(&config.persistent.fstype, "persistent.fstype");
    }
    for fstype in crate::state::store_filesystems(config) {
        let why = format!("the boot-state store ({})", config.bootstate.backend);
        n.filesystem(&fstype, &why);
    }
    if !config.overlay.is_empty() {
        n.module("overlay", "[[overlay]]");
    }
    for c in &config.crypt {
        let why = format!("[[crypt]] {}", c.name);
        n.module("dm_crypt", &why);
        if c.cipher.contains("adiantum") {
            // The template, then its stream cipher and hash (Linux's
            // crypto/adiantum.c instantiates xchacha12 or 20 and nhpoly1305).
            n.module("crypto-adiantum", &why);
            let stream = c.cipher.split(',').next().unwrap_or("xchacha12");
            n.add(&format!("crypto-{stream}"), false, true, &why);
            n.add("crypto-nhpoly1305", false, true, &why);
        } else {
            n.add("crypto-xts(aes)", false, true, &why);
        }
    }
    if config.verity.mode != VerityMode::Off {
        n.module("dm_verity", "[verity]");
        n.add("crypto-sha256", false, true, "[verity]");
    }
    let mut needs = n.0;
    if config.persistent.fsck {
        needs.push(Need::File {
            path: config.persistent.fsck_path.clone(),
            why: "persistent.fsck".into(),
        });
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        let (config, _) = crate::state::parse(text, "t.toml").unwrap();
        needs(&config).iter().map(ToString::to_string).collect()
    }

    /// The default (rpi-tryboot: autoboot.txt on FAT) needs ext4 and FAT with
    /// its code pages; no overlay, no device-mapper, no watchdog driver.
    #[test]
    fn the_default_config_needs_ext4_and_fat() {
        assert_eq!(
            lines(""),
            [
                "module ext4 # system.fstype, persistent.fstype",
                "module vfat # the boot-state store (rpi-tryboot)",
                "module nls_cp437 # the boot-state store (rpi-tryboot) (vfat's codepage 437)",
                "module nls_ascii # the boot-state store (rpi-tryboot) (vfat's iocharset ascii)",
            ]
        );
    }

    /// Each feature brings its modules, and only it: overlay, the watchdog's
    /// driver (early), dm-crypt with the cipher's modules, dm-verity, and the
    /// checker as a file.
    #[test]
    fn each_feature_brings_its_modules() {
        let got = lines(
            "[boot]\nwatchdog_s = 30\nwatchdog_module = \"i6300esb\"\n\
             [system]\nfstype = \"erofs\"\n\
             [persistent]\nfsck = true\n\
             [[overlay]]\ntarget = \"/\"\n\
             [[crypt]]\nname = \"userdata_crypt\"\ndevice = { label = \"USERDATA\" }\n\
             members = [\"persistent\"]\npartitioned = false\nkey = \"rpi-otp\"\n\
             cipher = \"xchacha12,aes-adiantum-plain64\"\n\
             [verity]\nmode = \"required\"\n\
             [bootstate]\nbackend = \"uboot-env\"\n\
             [bootstate.uboot-env]\nraw_offsets = [0x100000]\npartition = \"bootconfig\"\nfiles = []\n",
        );
        assert_eq!(
            got,
            [
                "module i6300esb early # boot.watchdog_module",
                "module erofs # system.fstype",
                "module ext4 # persistent.fstype",
                "module overlay # [[overlay]]",
                "module dm_crypt # [[crypt]] userdata_crypt",
                "module crypto-adiantum # [[crypt]] userdata_crypt",
                "module crypto-xchacha12 optional # [[crypt]] userdata_crypt",
                "module crypto-nhpoly1305 optional # [[crypt]] userdata_crypt",
                "module dm_verity # [verity]",
                "module crypto-sha256 optional # [verity]",
                "file /sbin/e2fsck # persistent.fsck",
            ],
            "a raw env needs no filesystem"
        );
        let aes = lines(
            "[[crypt]]\nname = \"osdata_crypt\"\ndevice = { label = \"OSDATA_CRYPT\" }\n\
             members = [\"system_a\", \"system_b\", \"persistent\"]\nkey = \"rpi-otp\"\n\
             [bootstate]\nbackend = \"fwu-metadata\"\n",
        );
        assert!(aes.contains(&"module crypto-xts(aes) optional # [[crypt]] osdata_crypt".into()));
        assert!(
            !aes.iter().any(|l| l.contains("vfat")),
            "FWU metadata are raw: {aes:?}"
        );
    }

    /// A layout without persistent does not need its filesystem; an unknown
    /// cipher or module name is refused by the config check.
    #[test]
    fn absent_members_and_bad_names() {
        let got = lines("[partitions]\npersistent = \"\"\n[persistent]\nfstype = \"f2fs\"\n");
        assert!(!got.iter().any(|l| l.contains("f2fs")), "{got:?}");
        for bad in [
            "[boot]\nwatchdog_module = \"../x\"\n",
            "[[crypt]]\nname = \"c\"\ndevice = { label = \"C\" }\nmembers = [\"persistent\"]\n\
             key = \"rpi-otp\"\ncipher = \"serpent-cbc\"\n",
        ] {
            assert!(crate::state::parse(bad, "t.toml").is_err(), "{bad}");
        }
    }
}
