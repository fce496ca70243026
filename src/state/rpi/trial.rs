//! The trial record: what the firmware's one-shot tryboot flag cannot keep.
//! Which slot is on trial, how many trial boots were armed for it, and the
//! last slot given up and why, in a redundant pair of U-Boot-format env
//! files on bootconfig (`state::uboot::envstore`: the copy not in use is
//! written and synced before it counts, so a power cut leaves one valid
//! copy). The firmware never reads it.
//!
//! A pair whose copies both fail their CRC is no pending trial (said in the
//! record) and is never written back by the boot; an explicit mark writes a
//! fresh record over it.

use crate::disk::devices::Partition;
use crate::kernel::sys::Sys;
use crate::state::uboot::config::UbootEnvConfig;
use crate::state::uboot::envblock::Env;
use crate::state::uboot::envstore::{self, CopyFault, Health, IfAllCorrupt};
use crate::state::uboot::store::{self, Store};
use crate::types::{error_chain, Slot};
use std::path::Path;

/// The variables of the record.
pub(crate) const TRIAL_SLOT: &str = "SLOTINIT_TRIAL_SLOT";
pub(crate) const TRIAL_TRIES: &str = "SLOTINIT_TRIAL_TRIES";
pub(crate) const GIVEN_UP: &str = "SLOTINIT_GIVEN_UP";

/// A trial armed and not yet committed or given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trial {
    pub(crate) slot: Slot,
    /// Trial boots armed so far (counted at arming: `boot_next`).
    pub(crate) tries: u32,
}

/// The record's content.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) pending: Option<Trial>,
    /// "slot b: 3 trial boots did not reach mark-good", for `status`.
    pub(crate) given_up: Option<String>,
}

impl Record {
    /// Reads the record from a valid env; an invalid value is an error
    /// naming the variable.
    pub(crate) fn from_env(env: &Env) -> Result<Record, String> {
        let text = |name: &str| {
            env.get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let pending = match (text(TRIAL_SLOT), text(TRIAL_TRIES)) {
            (None, _) => None,
            (Some(s), tries) => {
                let slot =
                    Slot::parse(&s).ok_or_else(|| format!("{TRIAL_SLOT}={s:?} names no slot"))?;
                let tries = match tries {
                    None => 0,
                    Some(t) => t
                        .parse()
                        .map_err(|_| format!("{TRIAL_TRIES}={t:?} is not a count"))?,
                };
                Some(Trial { slot, tries })
            }
        };
        Ok(Record {
            pending,
            given_up: text(GIVEN_UP),
        })
    }

    /// `env` with the record's variables set (others kept).
    pub(crate) fn apply(&self, env: &mut Env) -> Result<(), String> {
        // The others as they were, the record's own variables set anew.
        let mut out = Env::new();
        for (name, value) in env.iter() {
            if ![TRIAL_SLOT, TRIAL_TRIES, GIVEN_UP]
                .iter()
                .any(|n| n.as_bytes() == name)
            {
                out.set_bytes(name, value).map_err(|e| e.to_string())?;
            }
        }
        *env = out;
        let set = |env: &mut Env, name: &str, value: Option<String>| match value {
            Some(v) => env.set(name, &v).map(drop).map_err(|e| e.to_string()),
            None => Ok(()),
        };
        set(
            env,
            TRIAL_SLOT,
            self.pending.map(|t| t.slot.letter().into()),
        )?;
        set(env, TRIAL_TRIES, self.pending.map(|t| t.tries.to_string()))?;
        set(env, GIVEN_UP, self.given_up.clone())
    }
}

/// What the pair holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Loaded {
    /// No copy yet (a fresh device): no pending trial.
    Fresh,
    Valid(Record),
    /// Both copies corrupt, or an invalid value: no pending trial, and
    /// nothing written back but by an explicit mark.
    Corrupt(String),
}

/// The pair, open on the mounted bootconfig.
pub(crate) struct TrialStore {
    store: Store,
    pub(crate) loaded: Loaded,
}

/// Runs `write` with `dir` writable: a read-only mount (as the store
/// mounts bootconfig, so that a boot that writes nothing leaves the FAT's
/// dirty bit alone) is remounted read-write around it and read-only after
/// (`state::uboot::store::remount`, the U-Boot store's own).
pub(crate) fn writable<T, E: From<String>>(
    sys: &mut dyn Sys,
    dir: &Path,
    write: impl FnOnce(&mut dyn Sys) -> Result<T, E>,
) -> Result<T, E> {
    let read_only = sys.is_read_only(dir).unwrap_or(false);
    if read_only {
        store::remount(sys, dir, true).map_err(|e| E::from(error_chain(&e)))?;
    }
    let result = write(sys);
    if read_only {
        if let Err(e) = store::remount(sys, dir, false) {
            log::warn!("{}", error_chain(&e));
        }
    }
    result
}

impl TrialStore {
    /// Mounts `partition` on `mount_dir` read-only (unless mounted there
    /// already), as `state::uboot::store` does, and loads the pair. An empty
    /// `partition_role` mounts nothing: the files are in `mount_dir`.
    pub(crate) fn open(
        sys: &mut dyn Sys,
        partition: Option<&Partition>,
        partition_role: &str,
        fstype: &str,
        files: &[String],
        size: usize,
        mount_dir: &Path,
    ) -> Result<TrialStore, store::OpenError> {
        let mut config = UbootEnvConfig::default();
        config.partition = partition_role.to_string();
        config.fstype = fstype.to_string();
        config.files = files.to_vec();
        config.size = size;
        if partition_role.is_empty() {
            // No member to mount: the files are in `mount_dir` as it is.
            config.fw_env = files
                .iter()
                .map(|f| format!("{} 0x0 {size:#x}", mount_dir.join(f).display()))
                .collect();
        }
        let store = store::open(sys, &config, partition, mount_dir)?;
        let loaded = judge(&store);
        Ok(TrialStore { store, loaded })
    }

    /// The pending trial, if the record is valid.
    pub(crate) fn record(&self) -> Record {
        match &self.loaded {
            Loaded::Valid(r) => r.clone(),
            _ => Record::default(),
        }
    }

    /// Where the pair is.
    pub(crate) fn location(&self) -> String {
        self.store
            .location
            .copies()
            .iter()
            .map(|(_, c)| c.path.display().to_string())
            .collect::<Vec<_>>()
            .join(" + ")
    }

    pub(crate) fn health(&self) -> String {
        self.store.loaded.health.to_string()
    }

    /// Writes `record` durably. A corrupt pair is written over only when
    /// `overwrite` (an explicit mark).
    pub(crate) fn write(
        &mut self,
        sys: &mut dyn Sys,
        dir: &Path,
        record: &Record,
        overwrite: bool,
    ) -> Result<(), String> {
        let mode = match (&self.loaded, overwrite) {
            (Loaded::Fresh, _) | (_, true) => IfAllCorrupt::Overwrite,
            (Loaded::Corrupt(why), false) => {
                return Err(format!(
                    "trial record {} is unusable ({why}); nothing written",
                    self.location()
                ))
            }
            (Loaded::Valid(_), false) => IfAllCorrupt::Refuse,
        };
        let mut env = self.store.loaded.env.clone().unwrap_or_default();
        record.apply(&mut env)?;
        let location = self.store.location.clone();
        let previous = self.store.loaded.clone();
        let loaded = writable(sys, dir, |sys| {
            envstore::plan(sys, &location, &env, &previous, mode)
                .and_then(|p| p.write(sys, &location))
                .map_err(|e| error_chain(&e))
        })?;
        self.store.loaded = loaded;
        // A pair with a copy still missing (the first write): the other copy
        // too, so that both hold the record.
        if matches!(self.store.loaded.health, Health::OneCorrupt { .. }) {
            let previous = self.store.loaded.clone();
            let again = writable(sys, dir, |sys| {
                envstore::plan(sys, &location, &env, &previous, IfAllCorrupt::Refuse)
                    .and_then(|p| p.write(sys, &location))
                    .map_err(|e| error_chain(&e))
            });
            match again {
                Ok(l) => self.store.loaded = l,
                Err(e) => log::warn!("trial record: second copy not written: {e}"),
            }
        }
        self.loaded = Loaded::Valid(record.clone());
        Ok(())
    }

    /// Unmounts what open mounted.
    pub(crate) fn close(self, sys: &mut dyn Sys) {
        self.store.close(sys);
    }
}

/// What a load means: fresh (every copy missing or empty), valid, corrupt.
fn judge(store: &Store) -> Loaded {
    match (&store.loaded.env, &store.loaded.health) {
        (None, Health::AllCorrupt { faults })
            if faults.iter().all(|f| {
                matches!(
                    f,
                    CopyFault::Missing { .. } | CopyFault::Truncated { got: 0, .. }
                )
            }) =>
        {
            Loaded::Fresh
        }
        (None, health) => Loaded::Corrupt(health.to_string()),
        (Some(env), _) => match Record::from_env(env) {
            Ok(r) => Loaded::Valid(r),
            Err(e) => Loaded::Corrupt(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::sys::Real;

    /// The first call starting with `prefix`.
    fn starts(sys: &crate::kernel::fake::Fake, prefix: &str) -> Option<usize> {
        sys.calls.iter().position(|c| c.starts_with(prefix))
    }

    fn files() -> Vec<String> {
        vec!["t.env".into(), "t-redund.env".into()]
    }

    fn open(dir: &Path) -> TrialStore {
        TrialStore::open(&mut Real, None, "", "vfat", &files(), 0x1000, dir).unwrap()
    }

    fn pending(slot: Slot, tries: u32) -> Record {
        Record {
            pending: Some(Trial { slot, tries }),
            given_up: None,
        }
    }

    #[test]
    fn record_round_trips_through_env() {
        let r = Record {
            pending: Some(Trial {
                slot: Slot::B,
                tries: 2,
            }),
            given_up: Some("slot a: marked bad".into()),
        };
        let mut env = Env::from_pairs([("other", "kept")]).unwrap();
        r.apply(&mut env).unwrap();
        assert_eq!(Record::from_env(&env).unwrap(), r);
        assert_eq!(env.get("other"), Some(&b"kept"[..]));
        Record::default().apply(&mut env).unwrap();
        assert_eq!(env.get(TRIAL_SLOT), None);
        let bad = Env::from_pairs([(TRIAL_SLOT, "c")]).unwrap();
        assert!(Record::from_env(&bad).unwrap_err().contains(TRIAL_SLOT));
        let bad = Env::from_pairs([(TRIAL_SLOT, "a"), (TRIAL_TRIES, "x")]).unwrap();
        assert!(Record::from_env(&bad).unwrap_err().contains(TRIAL_TRIES));
    }

    #[test]
    fn pair_is_created_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = open(dir.path());
        assert_eq!(t.loaded, Loaded::Fresh);
        t.write(&mut Real, dir.path(), &pending(Slot::B, 1), false)
            .unwrap();
        // Both copies hold it, and a fresh open reads it.
        assert!(dir.path().join("t.env").exists() && dir.path().join("t-redund.env").exists());
        let t = open(dir.path());
        assert_eq!(t.loaded, Loaded::Valid(pending(Slot::B, 1)));
        assert!(t.health().contains("both copies valid"), "{}", t.health());
    }

    /// Both copies failing their CRC: no pending trial, never written back
    /// by the boot; an explicit mark writes a fresh record.
    #[test]
    fn corrupt_pair_is_no_trial_and_is_not_written_back() {
        let dir = tempfile::tempdir().unwrap();
        for f in files() {
            std::fs::write(dir.path().join(f), vec![0x5a; 0x1000]).unwrap();
        }
        let mut t = open(dir.path());
        assert!(matches!(t.loaded, Loaded::Corrupt(_)), "{:?}", t.loaded);
        assert_eq!(t.record(), Record::default());
        let e = t
            .write(&mut Real, dir.path(), &Record::default(), false)
            .unwrap_err();
        assert!(e.contains("unusable") && e.contains("t.env"), "{e}");
        for f in files() {
            assert_eq!(
                std::fs::read(dir.path().join(f)).unwrap(),
                vec![0x5a; 0x1000]
            );
        }
        t.write(&mut Real, dir.path(), &pending(Slot::A, 0), true)
            .unwrap();
        assert_eq!(open(dir.path()).loaded, Loaded::Valid(pending(Slot::A, 0)));
    }

    /// One copy torn: the other is read, and the next write goes onto the
    /// torn one.
    #[test]
    fn one_torn_copy_keeps_the_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = open(dir.path());
        t.write(&mut Real, dir.path(), &pending(Slot::B, 1), false)
            .unwrap();
        t.write(&mut Real, dir.path(), &pending(Slot::B, 2), false)
            .unwrap();
        // Tear the copy holding tries=2 (the current one): tries=1 remains.
        let current = ["t.env", "t-redund.env"]
            .into_iter()
            .find(|f| {
                let bytes = std::fs::read(dir.path().join(f)).unwrap();
                bytes.windows(22).any(|w| w == b"SLOTINIT_TRIAL_TRIES=2")
            })
            .unwrap();
        let path = dir.path().join(current);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let t = open(dir.path());
        assert_eq!(t.loaded, Loaded::Valid(pending(Slot::B, 1)));
    }

    #[test]
    fn a_read_only_mount_is_remounted_around_the_write_on_the_fake() {
        let mut sys = crate::kernel::fake::Fake::default();
        let part = Partition {
            dev: "mmcblk0p1".into(),
            disk: "mmcblk0".into(),
            number: 1,
            name: Some("bootconfig".into()),
            uuid: None,
        };
        let dir = Path::new("/run/slotinit/bootstate");
        let mut t = TrialStore::open(
            &mut sys,
            Some(&part),
            "bootconfig",
            "vfat",
            &files(),
            0x1000,
            dir,
        )
        .unwrap();
        assert!(
            starts(&sys, "mount /dev/mmcblk0p1").is_some(),
            "{:?}",
            sys.calls
        );
        sys.read_only.insert(dir.into());
        t.write(&mut sys, dir, &pending(Slot::B, 1), false).unwrap();
        let rw = starts(&sys, "remount /run/slotinit/bootstate").unwrap();
        let written = sys
            .calls
            .iter()
            .position(|c| c.starts_with("fsync /run/slotinit/bootstate/t"))
            .unwrap();
        assert!(rw < written, "{:?}", sys.calls);
        let last_remount = sys
            .calls
            .iter()
            .rposition(|c| c.starts_with("remount /run/slotinit/bootstate"))
            .unwrap();
        assert!(sys.calls[last_remount].contains(" ro,"), "{:?}", sys.calls);
        assert!(last_remount > written);
        t.close(&mut sys);
        assert!(starts(&sys, "umount /run/slotinit/bootstate").is_some());
    }
}
