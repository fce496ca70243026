//! The boot-state store as the init and the subcommands use it: find the
//! environment (files on a layout partition, mounted here, or fw_env.config
//! lines), read RAUC's state from it, and commit a new state durably.
//!
//! A partition this module mounts is mounted read-only, and remounted
//! read-write only around a write: vfat sets its dirty bit in the boot sector
//! on every read-write mount and clears it on the way back (fs/fat/inode.c
//! `fat_set_state`), so a boot or `status` that writes nothing must not
//! mount it writable (issue 11, B).
//!
//! Even a write need not: each read-write cycle writes the whole boot sector
//! (the BPB) twice, and a write through the filesystem rewrites the directory
//! sector holding both copies' entries (mtime). On media that tear inside a
//! sector (SD cards), a cut there loses the filesystem or both copies. So
//! where this module mounted the FAT itself and the copy to write is a file
//! of exactly the env's size, the new copy goes onto that file's own sectors
//! and nothing else (`Store::write_raw`): map its blocks with FIBMAP while
//! mounted read-only, check the device holds the file's bytes there, unmount,
//! open the partition O_EXCL (EBUSY while any other mount of it remains),
//! check again, write and flush, mount read-only again and read the copy back
//! through the filesystem. Anything that does not fit (a missing or short
//! copy, a filesystem mounted elsewhere, a mapping that does not check out)
//! takes the filesystem path; the pair's order holds on both paths: only the
//! copy that is not current is written.
//!
//! A write never replaces the bootloader's own variables with nothing
//! (issue 11, item 1): it starts from the current valid copy, else from
//! `bootstate.uboot-env.base_env`, else (an env only slotinit uses,
//! `bootstate.uboot-env.env_owner = "slotinit"`) from an empty env, and otherwise refuses.
//!
//! The store keeps no kernel handle: each call that touches the medium takes
//! the boot's [`Sys`], so the init's host tests see the mounts, remounts and
//! writes in order on the recording fake.

use crate::disk::devices::Partition;
use crate::kernel::sys::{enoent, errno_of, Sys};
use crate::state::uboot::config::{EnvOwner, UbootEnvConfig};
use crate::state::uboot::contract::Contract;
use crate::state::uboot::rauc::{self, State};

use crate::state::uboot::envblock::{self, Env, Layout};
use crate::state::uboot::envstore::{
    self, EnvLocation, EnvStoreError, Health, IfAllCorrupt, LoadedEnv,
};
use crate::state::uboot::fwenv;
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// The variable where slotinit leaves why it last gave up a slot.
const FALLBACK_VAR: &str = "SLOTINIT_FALLBACK";

/// What the store holds, as far as the decision is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Contents {
    /// A valid environment with RAUC's variables.
    State(State),
    /// No copy exists yet (a fresh device): the initial state may be written.
    Fresh,
    /// Copies exist but none is usable, or the variables are invalid: nothing is
    /// written back until userspace decides.
    Unusable(String),
}

/// An open store: where it is, what was loaded, and a mount to undo.
pub(crate) struct Store {
    pub(crate) location: EnvLocation,
    pub(crate) loaded: LoadedEnv,
    pub(crate) contents: Contents,
    /// The directory this store mounted its partition on, if it did.
    mounted: Option<PathBuf>,
    /// True when that mount is read-only and must be remounted read-write
    /// around a write; false when the filesystem was mounted read-write
    /// elsewhere already and this mount shares it read-write.
    remount: bool,
    /// The partition this store mounted, and its filesystem type, to unmount
    /// and mount again around a write onto a copy's own sectors.
    device: Option<PathBuf>,
    fstype: String,
    /// What a write starts from when no copy is valid (see the module docs).
    env_owner: EnvOwner,
    base_env: Option<PathBuf>,
    /// Whose variables a write sets, and the state config they map with.
    contract: Contract,
    state_config: rauc::Config,
}

/// The store's state as recorded in the handoff and shown by `status`
/// (the handoff names it by this path).
pub(crate) use crate::state::Record;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CommitError {
    #[error("cannot encode the boot state")]
    State(#[source] rauc::BootStateError),
    #[error("cannot write the boot state")]
    Store(#[source] EnvStoreError),
    /// No valid copy and no base env, where U-Boot reads the env as its own.
    #[error(
        "refusing to write {location}: no valid copy holds U-Boot's own variables and \
         bootstate.uboot-env.base_env is not set, so the env written would have no bootcmd and \
         U-Boot would stop at its prompt; set bootstate.uboot-env.base_env to the board's default \
         env (name=value lines, e.g. U-Boot's u-boot-initial-env), or \
         bootstate.uboot-env.env_owner = \"slotinit\" if U-Boot does not read this env"
    )]
    NoBaseEnv { location: String },
    #[error("cannot read bootstate.uboot-env.base_env {}", .path.display())]
    ReadBaseEnv {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid bootstate.uboot-env.base_env {}", .path.display())]
    ParseBaseEnv {
        path: PathBuf,
        #[source]
        source: envblock::TextError,
    },
    #[error("cannot remount {} {}", .target.display(), if *.writable { "read-write" } else { "read-only" })]
    Remount {
        target: PathBuf,
        writable: bool,
        #[source]
        source: nix::Error,
    },
    /// The copy was written onto its sectors, but the partition could not be
    /// mounted again to read it back: the commit counts as failed.
    #[error("cannot mount {} on {} again after writing {}", .device.display(), .target.display(), .file.display())]
    MountAgain {
        device: PathBuf,
        target: PathBuf,
        file: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot write {} onto its sectors of {}", .file.display(), .device.display())]
    Raw {
        device: PathBuf,
        file: PathBuf,
        #[source]
        source: Box<EnvStoreError>,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("boot state: no {member} partition to hold {files}")]
    NoPartition { member: String, files: String },
    #[error("boot state: cannot mount {device} on {target}")]
    Mount {
        device: PathBuf,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("boot state: invalid fw_env lines")]
    FwEnv(#[source] fwenv::FwEnvError),
    /// The medium holds the other env layout than the config names; nothing is written.
    #[error("boot state: {} at offset {offset} holds a valid {found}, but the config names a {expected}; {fix}; nothing is written until then", .path.display())]
    WrongLayout {
        path: PathBuf,
        offset: u64,
        found: Layout,
        expected: Layout,
        fix: String,
    },
    #[error("boot state")]
    Store(#[source] EnvStoreError),
}

/// Opens the store: mounts the partition on `mount_dir` (files) or uses the
/// fw_env device lines, then loads and judges the environment.
pub(crate) fn open(
    sys: &mut dyn Sys,
    config: &UbootEnvConfig,
    partition: Option<&Partition>,
    mount_dir: &Path,
) -> Result<Store, OpenError> {
    let part = || {
        partition.ok_or_else(|| OpenError::NoPartition {
            member: config.partition.clone(),
            files: config.files.join(", "),
        })
    };
    let mut remount = false;
    let mut device = None;
    let (location, mounted) = if !config.fw_env.is_empty() {
        let parsed = fwenv::parse(&config.fw_env.join("\n")).map_err(OpenError::FwEnv)?;
        (EnvLocation::from_fwenv(&parsed), None)
    } else if let [first, rest @ ..] = config.raw_offsets.as_slice() {
        let location =
            EnvLocation::device(part()?.node(), *first, rest.first().copied(), config.size);
        (location, None)
    } else {
        let part = part()?;
        let already = is_mount_point(sys, mount_dir);
        if !already {
            let _ = sys.create_dir_all(mount_dir);
            remount = mount_read_only(sys, part, &config.fstype, mount_dir)?;
            device = Some(part.node());
        }
        let files: Vec<PathBuf> = config.files.iter().map(|f| mount_dir.join(f)).collect();
        let location = match files.as_slice() {
            [one] => EnvLocation::single_file(one, config.size),
            [first, second, ..] => EnvLocation::redundant_files(first, second, config.size),
            [] => EnvLocation::single_file(mount_dir.join("uboot.env"), config.size),
        };
        (location, (!already).then(|| mount_dir.to_path_buf()))
    };
    let mut store = Store {
        loaded: match envstore::load_with(sys, &location) {
            Ok(loaded) => loaded,
            Err(e) => {
                unmount(sys, mounted.as_deref());
                return Err(match e {
                    EnvStoreError::WrongLayout {
                        path,
                        offset,
                        found,
                        expected,
                    } => OpenError::WrongLayout {
                        fix: layout_fix(config, mount_dir, &path, offset, found),
                        path,
                        offset,
                        found,
                        expected,
                    },
                    e => OpenError::Store(e),
                });
            }
        },
        location,
        contents: Contents::Fresh,
        mounted,
        remount,
        device,
        fstype: config.fstype.clone(),
        env_owner: config.env_owner,
        base_env: (!config.base_env.is_empty()).then(|| PathBuf::from(&config.base_env)),
        contract: config.contract,
        // A config without one is judged Unusable just below (and the
        // backend's open checked it before): no write uses this default.
        state_config: config.rauc().unwrap_or_default(),
    };
    store.contents = judge(&store.loaded, config);
    Ok(store)
}

/// Flags of the boot-state mount; `MS_RDONLY` is added or removed around writes.
const MOUNT_FLAGS: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Mounts `part` read-only on `dir`; true if so. A filesystem mounted
/// read-write elsewhere already (a booted system's /boot/firmware) cannot be
/// mounted read-only (the kernel's get_tree_bdev: "would change RO state",
/// EBUSY); it is dirty anyway, so it is shared read-write as before (false).
fn mount_read_only(
    sys: &mut dyn Sys,
    part: &Partition,
    fstype: &str,
    dir: &Path,
) -> Result<bool, OpenError> {
    let node = part.node();
    let mut mount = |flags: MsFlags| {
        mount_flags(sys, &node, fstype, dir, flags).map_err(|source| OpenError::Mount {
            device: node.clone(),
            target: dir.to_path_buf(),
            source,
        })
    };
    match mount(MOUNT_FLAGS | MsFlags::MS_RDONLY) {
        Ok(()) => Ok(true),
        Err(OpenError::Mount {
            source: nix::Error::EBUSY,
            ..
        }) => mount(MOUNT_FLAGS).map(|()| false),
        Err(e) => Err(e),
    }
}

fn mount_flags(
    sys: &mut dyn Sys,
    node: &Path,
    fstype: &str,
    dir: &Path,
    flags: MsFlags,
) -> nix::Result<()> {
    log::debug!(
        "mount {} on {} ({})",
        node.display(),
        dir.display(),
        if flags.contains(MsFlags::MS_RDONLY) {
            "ro"
        } else {
            "rw"
        }
    );
    sys.mount_follow(&node.to_string_lossy(), dir, Some(fstype), flags, None)
        .map_err(|e| errno_of(&e))
}

/// The config change that makes the config describe what the medium holds
/// (issue 11, item 15): `found` is the layout of the valid env at `path`.
fn layout_fix(
    config: &UbootEnvConfig,
    mount_dir: &Path,
    path: &Path,
    offset: u64,
    found: Layout,
) -> String {
    let file = path
        .strip_prefix(mount_dir)
        .unwrap_or(path)
        .display()
        .to_string();
    match (found, config.fw_env.is_empty(), config.raw_offsets.is_empty()) {
        (Layout::Single, false, _) => format!(
            "keep only the bootstate.uboot-env.fw_env line of {} (offset {offset:#x}), as U-Boot keeps one copy",
            path.display()
        ),
        (Layout::Redundant, false, _) => format!(
            "add the second copy to bootstate.uboot-env.fw_env (U-Boot's CONFIG_ENV_OFFSET_REDUND), \
             as {} is one copy of a redundant pair",
            path.display()
        ),
        (Layout::Single, true, false) => format!(
            "set bootstate.uboot-env.raw_offsets = [{offset:#x}] (one copy, as U-Boot keeps it)"
        ),
        (Layout::Redundant, true, false) => format!(
            "set bootstate.uboot-env.raw_offsets = [{offset:#x}, <U-Boot's CONFIG_ENV_OFFSET_REDUND>]"
        ),
        (Layout::Single, true, true) => format!(
            "set bootstate.uboot-env.files = [\"{file}\"] (U-Boot keeps a single copy: no CONFIG_ENV_REDUNDANT)"
        ),
        (Layout::Redundant, true, true) => format!(
            "set bootstate.uboot-env.files = [\"{file}\", \"<U-Boot's CONFIG_ENV_FAT_FILE_REDUND>\"] \
             (U-Boot keeps a redundant pair)"
        ),
    }
}

/// What a load means for the decision.
pub(super) fn judge(loaded: &LoadedEnv, config: &UbootEnvConfig) -> Contents {
    let rauc = match config.rauc() {
        Ok(r) => r,
        Err(e) => return Contents::Unusable(format!("config: {e}")),
    };
    match (&loaded.env, &loaded.health) {
        // Nothing was ever stored: every copy missing, or left empty by a
        // power cut while it was being created. Writing destroys nothing.
        (None, Health::AllCorrupt { faults })
            if faults.iter().all(|f| {
                matches!(
                    f,
                    envstore::CopyFault::Missing { .. }
                        | envstore::CopyFault::Truncated { got: 0, .. }
                )
            }) =>
        {
            Contents::Fresh
        }
        (None, health) => Contents::Unusable(health.to_string()),
        (Some(env), _) => match config.contract.read(env, &rauc) {
            Ok(state) => Contents::State(state),
            // A valid env without the contract's variables (a board's default
            // env): adding them destroys nothing.
            Err(rauc::BootStateError::MissingVariable { .. }) if config.contract.absent(env) => {
                Contents::Fresh
            }
            Err(e) => Contents::Unusable(e.to_string()),
        },
    }
}

impl Store {
    /// The state for the decision: a fresh store starts from the initial state.
    pub(crate) fn state(&self, config: &UbootEnvConfig) -> Option<State> {
        match &self.contents {
            Contents::State(s) => Some(s.clone()),
            Contents::Fresh => config.rauc().ok().map(|r| State::initial(&r)),
            Contents::Unusable(_) => None,
        }
    }

    /// Writes `state` (and the fallback reason, if any) durably. Refuses when
    /// the store is unusable: a corrupt copy is never overwritten as if good.
    pub(crate) fn commit(
        &mut self,
        sys: &mut dyn Sys,
        state: &State,
        fallback: Option<&str>,
    ) -> Result<(), CommitError> {
        if let Contents::Unusable(_) = self.contents {
            return Err(CommitError::Store(EnvStoreError::AllCorrupt));
        }
        // A fresh store has no copy to protect: every copy is missing.
        let mode = match self.contents {
            Contents::Fresh => IfAllCorrupt::Overwrite,
            _ => IfAllCorrupt::Refuse,
        };
        self.write_state(sys, state, fallback, mode)
    }

    /// `mark-active --force`: writes `state` even over an unusable store,
    /// on top of the current valid copy if there is one (its variables kept,
    /// RAUC's replaced), else on top of `bootstate.uboot-env.base_env`, else (only
    /// where `bootstate.uboot-env.env_owner = "slotinit"`) alone; otherwise
    /// [`CommitError::NoBaseEnv`] and nothing is written.
    pub(super) fn force_commit(
        &mut self,
        sys: &mut dyn Sys,
        state: &State,
    ) -> Result<(), CommitError> {
        self.write_state(sys, state, None, IfAllCorrupt::Overwrite)
    }

    fn write_state(
        &mut self,
        sys: &mut dyn Sys,
        state: &State,
        fallback: Option<&str>,
        mode: IfAllCorrupt,
    ) -> Result<(), CommitError> {
        let mut env = match &self.loaded.env {
            Some(env) => env.clone(),
            None => self.base(sys)?,
        };
        self.contract
            .apply(state, &self.state_config, &mut env)
            .map_err(CommitError::State)?;
        if let Some(reason) = fallback {
            let _ = env.set(FALLBACK_VAR, reason);
        }
        let written = self.write_env(sys, &env, mode);
        // Once the new copy is current, the state is `state` even if the
        // repair of the other copy failed after it.
        if self.loaded.env.as_ref() == Some(&env) {
            self.contents = Contents::State(state.clone());
        }
        written
    }

    /// Writes `env` onto the copy that is not current, then (a pair with one
    /// copy still missing or corrupt, e.g. a fresh store) the other copy, so
    /// fw_printenv and U-Boot, which want both, read it from the first boot.
    /// Each copy goes onto its own sectors where it can ([`Self::write_raw`]),
    /// else through the filesystem, remounted read-write once for both.
    fn write_env(
        &mut self,
        sys: &mut dyn Sys,
        env: &Env,
        mode: IfAllCorrupt,
    ) -> Result<(), CommitError> {
        if !self.write_raw(sys, env, mode)? {
            return self
                .writable(sys, |store, sys| {
                    store.loaded =
                        envstore::store_with(sys, &store.location, env, &store.loaded, mode)
                            .map_err(CommitError::Store)?;
                    store.repair_now(sys)
                })
                .map(drop);
        }
        if let Some(current) = self.loaded.env.clone().filter(|_| self.needs_repair()) {
            if !self.write_raw(sys, &current, IfAllCorrupt::Refuse)? {
                self.writable(sys, Self::repair_now)?;
            }
        }
        Ok(())
    }

    /// What a write starts from when no copy is valid.
    fn base(&self, sys: &mut dyn Sys) -> Result<Env, CommitError> {
        if let Some(path) = &self.base_env {
            let text = sys
                .read_file(path)
                .and_then(|text| text.ok_or_else(enoent))
                .map_err(|source| CommitError::ReadBaseEnv {
                    path: path.clone(),
                    source,
                })?;
            return envblock::parse_text(&text).map_err(|source| CommitError::ParseBaseEnv {
                path: path.clone(),
                source,
            });
        }
        match self.env_owner {
            EnvOwner::Slotinit => Ok(Env::new()),
            EnvOwner::Bootloader => Err(CommitError::NoBaseEnv {
                location: self.record().location,
            }),
        }
    }

    /// Rewrites the current env when one copy of a pair is corrupt.
    pub(crate) fn repair(&mut self, sys: &mut dyn Sys) -> Result<bool, CommitError> {
        let Some(env) = self.loaded.env.clone().filter(|_| self.needs_repair()) else {
            return Ok(false);
        };
        self.write_env(sys, &env, IfAllCorrupt::Refuse)?;
        Ok(true)
    }

    fn needs_repair(&self) -> bool {
        matches!(self.loaded.health, Health::OneCorrupt { .. }) && self.loaded.env.is_some()
    }

    fn repair_now(&mut self, sys: &mut dyn Sys) -> Result<bool, CommitError> {
        let Some(env) = self.loaded.env.clone().filter(|_| self.needs_repair()) else {
            return Ok(false);
        };
        self.loaded = envstore::store_with(
            sys,
            &self.location,
            &env,
            &self.loaded,
            IfAllCorrupt::Refuse,
        )
        .map_err(CommitError::Store)?;
        Ok(true)
    }

    /// Writes `env` onto the sectors of the copy it replaces, with the
    /// partition unmounted (module docs). Ok(false) when this path does not
    /// apply or a check before the write fails: nothing was written, the
    /// partition is mounted read-only as before, and the caller writes
    /// through the filesystem. An error once the write began is a failed
    /// commit: only the copy that is not current was touched.
    fn write_raw(
        &mut self,
        sys: &mut dyn Sys,
        env: &Env,
        mode: IfAllCorrupt,
    ) -> Result<bool, CommitError> {
        let Some(mut raw) = self.raw_write(sys, env, mode)? else {
            return Ok(false);
        };
        // The lock is a file on this filesystem; an open file keeps it mounted.
        raw.planned.unlock();
        if let Err(e) = sys.umount(&raw.dir, MntFlags::empty()) {
            fall_back(&raw.file, &errno_of(&e));
            return Ok(false);
        }
        let written = write_sectors(sys, &raw);
        let flags = MOUNT_FLAGS | MsFlags::MS_RDONLY;
        let mounted_again =
            mount_flags(sys, &raw.device, &self.fstype, &raw.dir, flags).map_err(|source| {
                CommitError::MountAgain {
                    device: raw.device.clone(),
                    target: raw.dir.clone(),
                    file: raw.file.clone(),
                    source,
                }
            });
        if let Err(e) = mounted_again {
            // Nothing of this store is mounted any more.
            self.mounted = None;
            return Err(match written {
                Ok(Err(write)) => write,
                _ => e,
            });
        }
        match written {
            // A check failed before anything was written.
            Err(e) => {
                fall_back(&raw.file, &e);
                return Ok(false);
            }
            Ok(result) => result?,
        }
        let RawWrite {
            device,
            file,
            planned,
            ..
        } = raw;
        self.loaded = planned
            .confirm(sys, &self.location)
            .map_err(|source| raw_error(&device, &file, source))?;
        Ok(true)
    }

    /// The copy `env` replaces, when it can go onto its own sectors: the
    /// store mounted a FAT read-only, the copy is a whole env file, and its
    /// blocks, mapped while the filesystem still shows the file, hold its
    /// bytes on the device. None: the filesystem path writes it.
    fn raw_write(
        &self,
        sys: &mut dyn Sys,
        env: &Env,
        mode: IfAllCorrupt,
    ) -> Result<Option<RawWrite>, CommitError> {
        let (Some(dir), Some(device), true) =
            (self.mounted.clone(), self.device.clone(), self.remount)
        else {
            return Ok(None);
        };
        let planned = envstore::plan(sys, &self.location, env, &self.loaded, mode)
            .map_err(CommitError::Store)?;
        let Some(current) = planned.whole_file(&self.location).map(<[u8]>::to_vec) else {
            return Ok(None);
        };
        let file = planned.path(&self.location).to_path_buf();
        if !envstore::on_fat(sys, &file) {
            return Ok(None);
        }
        let checked = envstore::map_file(sys, &file, current.len() as u64).and_then(|extents| {
            let dev = envstore::open_device(sys, &device, false)?;
            envstore::check_extents(&dev, &device, &file, &extents, &current)?;
            Ok(extents)
        });
        match checked {
            Ok(extents) => Ok(Some(RawWrite {
                dir,
                device,
                file,
                current,
                extents,
                planned,
            })),
            Err(e) => {
                fall_back(&file, &e);
                Ok(None)
            }
        }
    }

    /// Runs `write` with the partition this store mounted remounted
    /// read-write, and remounts it read-only afterwards whatever happened.
    fn writable<T>(
        &mut self,
        sys: &mut dyn Sys,
        write: impl FnOnce(&mut Self, &mut dyn Sys) -> Result<T, CommitError>,
    ) -> Result<T, CommitError> {
        if let Some(dir) = self.mounted.clone().filter(|_| self.remount) {
            remount(sys, &dir, true)?;
            let result = write(self, sys);
            // The data is synced already; a failure here leaves the mount
            // writable until close() unmounts it.
            if let Err(e) = remount(sys, &dir, false) {
                log::warn!("{}", crate::types::error_chain(&e));
            }
            result
        } else {
            write(self, sys)
        }
    }

    pub(crate) fn record(&self) -> Record {
        let mut record = Record {
            location: self
                .location
                .copies()
                .iter()
                .map(|(_, c)| format!("{}@{}", c.path.display(), c.offset))
                .collect::<Vec<_>>()
                .join(" + "),
            health: self.loaded.health.to_string(),
            ..Record::default()
        };
        for anomaly in &self.loaded.anomalies {
            // The current copy is used as U-Boot reads it; say what it held.
            record.health.push_str(&format!(
                "; current copy, read as U-Boot reads it: {anomaly}"
            ));
        }
        match &self.contents {
            Contents::State(s) => {
                record.order = s.order.iter().map(|b| b.to_string()).collect();
                record.left = s.left.iter().map(|(b, l)| (b.to_string(), *l)).collect();
            }
            Contents::Fresh => record.health = "no environment yet".into(),
            Contents::Unusable(why) => record.error = Some(why.clone()),
        }
        record.last_fallback = self
            .loaded
            .env
            .as_ref()
            .and_then(|e| e.get(FALLBACK_VAR))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        record
    }

    /// Unmounts the partition if this store mounted it.
    pub(crate) fn close(self, sys: &mut dyn Sys) {
        unmount(sys, self.mounted.as_deref());
    }
}

/// A copy checked to lie on its own sectors, with the planned write
/// ([`Store::raw_write`]).
struct RawWrite {
    /// Where the store mounted the partition.
    dir: PathBuf,
    device: PathBuf,
    /// The copy's file, and what it holds now.
    file: PathBuf,
    current: Vec<u8>,
    extents: Vec<envstore::Extent>,
    planned: envstore::Planned,
}

/// With the partition unmounted: checks the sectors again through a new
/// O_EXCL open and writes the copy onto them. Err: a check failed and
/// nothing was written; Ok(Err): the write failed.
fn write_sectors(
    sys: &mut dyn Sys,
    raw: &RawWrite,
) -> Result<Result<(), CommitError>, EnvStoreError> {
    // No page cache of the filesystem is left to go stale or be
    // written back over the copy; O_EXCL fails while another mount
    // of the partition (the booted system's) remains.
    let dev = envstore::open_device(sys, &raw.device, true)?;
    envstore::check_extents(&dev, &raw.device, &raw.file, &raw.extents, &raw.current)?;
    log::debug!(
        "writing {} onto {} at {:?}",
        raw.file.display(),
        raw.device.display(),
        raw.extents
            .iter()
            .map(|e| (e.device_offset, e.len))
            .collect::<Vec<_>>()
    );
    Ok(
        envstore::write_extents(sys, &dev, &raw.device, &raw.extents, raw.planned.block())
            .map_err(|source| raw_error(&raw.device, &raw.file, source)),
    )
}

fn raw_error(device: &Path, file: &Path, source: EnvStoreError) -> CommitError {
    CommitError::Raw {
        device: device.to_path_buf(),
        file: file.to_path_buf(),
        source: Box::new(source),
    }
}

/// The copy goes through the filesystem after all: why.
fn fall_back(file: &Path, e: &dyn std::error::Error) {
    log::info!(
        "writing {} through the filesystem: {}",
        file.display(),
        crate::types::error_chain(e)
    );
}

/// Remounts the store's partition at `dir` read-write or read-only again.
pub(crate) fn remount(sys: &mut dyn Sys, dir: &Path, writable: bool) -> Result<(), CommitError> {
    let flags = if writable {
        MOUNT_FLAGS
    } else {
        MOUNT_FLAGS | MsFlags::MS_RDONLY
    };
    log::debug!(
        "remount {} {}",
        dir.display(),
        if writable { "rw" } else { "ro" }
    );
    sys.remount(dir, flags).map_err(|e| CommitError::Remount {
        target: dir.to_path_buf(),
        writable,
        source: errno_of(&e),
    })
}

fn unmount(sys: &mut dyn Sys, dir: Option<&Path>) {
    if let Some(dir) = dir {
        if let Err(e) = sys.umount(dir, MntFlags::empty()) {
            log::warn!("cannot unmount {}: {}", dir.display(), errno_of(&e));
        }
    }
}

/// Whether `dir` is a mount point (/proc/self/mountinfo's fifth field).
fn is_mount_point(sys: &mut dyn Sys, dir: &Path) -> bool {
    let Ok(Some(bytes)) = sys.read_file(Path::new("/proc/self/mountinfo")) else {
        return false;
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return false;
    };
    let dir = dir.to_string_lossy();
    text.lines().any(|l| l.split(' ').nth(4) == Some(&dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::Fake;
    use crate::kernel::sys::Real;

    fn config_for(path: &Path) -> UbootEnvConfig {
        UbootEnvConfig {
            fw_env: vec![format!("{} 0x0 0x4000", path.display())],
            ..UbootEnvConfig::default()
        }
    }

    #[test]
    fn fresh_store_is_created_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        let config = config_for(&file);
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        assert_eq!(store.contents, Contents::Fresh);
        let state = store.state(&config).unwrap();
        store.commit(&mut Real, &state, Some("why")).unwrap();
        assert_eq!(store.contents, Contents::State(state.clone()));
        let store = open(&mut Real, &config, None, dir.path()).unwrap();
        assert_eq!(store.contents, Contents::State(state));
        let record = store.record();
        assert_eq!(record.order, vec!["A", "B"]);
        assert_eq!(record.last_fallback.as_deref(), Some("why"));
    }

    #[test]
    fn corrupt_store_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        std::fs::write(&file, vec![0x55u8; 0x4000]).unwrap();
        let config = config_for(&file);
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        assert!(matches!(store.contents, Contents::Unusable(_)));
        assert_eq!(store.state(&config), None);
        let rauc = config.rauc().unwrap();
        assert!(store
            .commit(&mut Real, &State::initial(&rauc), None)
            .is_err());
        assert_eq!(std::fs::read(&file).unwrap(), vec![0x55u8; 0x4000]);
        assert!(store.record().error.is_some());
    }

    #[test]
    fn env_without_rauc_variables_counts_as_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        let env = Env::from_pairs([("bootcmd", "run x")]).unwrap();
        write_single(&file, &env);
        let config = config_for(&file);
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        assert_eq!(store.contents, Contents::Fresh);
        let state = store.state(&config).unwrap();
        store.commit(&mut Real, &state, None).unwrap();
        let store = open(&mut Real, &config, None, dir.path()).unwrap();
        let env = store.loaded.env.unwrap();
        assert_eq!(
            env.get("bootcmd"),
            Some(&b"run x"[..]),
            "other variables kept"
        );
    }

    #[test]
    fn invalid_counter_is_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        let env = Env::from_pairs([
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "zz"),
            ("BOOT_B_LEFT", "3"),
        ])
        .unwrap();
        write_single(&file, &env);
        let store = open(&mut Real, &config_for(&file), None, dir.path()).unwrap();
        assert!(matches!(&store.contents, Contents::Unusable(e) if e.contains("BOOT_A_LEFT")));
    }

    fn write_single(path: &Path, env: &Env) {
        let block = crate::state::uboot::envblock::serialize(
            env,
            0x4000,
            crate::state::uboot::envblock::Header::Single,
        )
        .unwrap();
        std::fs::write(path, block).unwrap();
    }

    fn bootloader_config(path: &Path, base: Option<&Path>) -> UbootEnvConfig {
        UbootEnvConfig {
            env_owner: EnvOwner::Bootloader,
            base_env: base.map(|b| b.display().to_string()).unwrap_or_default(),
            ..config_for(path)
        }
    }

    // Issue 11, item 1: before the fix a fresh store was written with only
    // BOOT_*, and U-Boot, reading that env as its own, lost its bootcmd.
    #[test]
    fn fresh_bootloader_env_without_base_is_refused_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        let config = bootloader_config(&file, None);
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        assert_eq!(store.contents, Contents::Fresh);
        let state = store.state(&config).unwrap();
        let err = store.commit(&mut Real, &state, None).unwrap_err();
        assert!(matches!(err, CommitError::NoBaseEnv { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("bootstate.uboot-env.base_env"), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(!file.exists(), "nothing may be written");
    }

    #[test]
    fn fresh_bootloader_env_is_written_on_the_base_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        let base = dir.path().join("u-boot-initial-env");
        std::fs::write(
            &base,
            "# board defaults\nbootcmd=run distro_bootcmd\nbootdelay=2\nBOOT_ORDER=B A\n",
        )
        .unwrap();
        let config = bootloader_config(&file, Some(&base));
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        let state = store.state(&config).unwrap();
        store.commit(&mut Real, &state, None).unwrap();
        let env = open(&mut Real, &config, None, dir.path())
            .unwrap()
            .loaded
            .env
            .unwrap();
        assert_eq!(env.get("bootcmd"), Some(&b"run distro_bootcmd"[..]));
        assert_eq!(env.get("bootdelay"), Some(&b"2"[..]));
        // The counters are slotinit's, not the base env's.
        assert_eq!(env.get("BOOT_ORDER"), Some(&b"A B"[..]));
        assert_eq!(env.get("BOOT_A_LEFT"), Some(&b"3"[..]));
    }

    #[test]
    fn invalid_base_env_is_an_error_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        let base = dir.path().join("base.env");
        std::fs::write(&base, "bootcmd=x\nnot a variable\n").unwrap();
        let config = bootloader_config(&file, Some(&base));
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        let state = store.state(&config).unwrap();
        let err = store.commit(&mut Real, &state, None).unwrap_err();
        assert!(
            matches!(
                &err,
                CommitError::ParseBaseEnv {
                    source: envblock::TextError::MissingEquals { line: 2 },
                    ..
                }
            ),
            "{err}"
        );
        let missing = bootloader_config(&file, Some(&dir.path().join("nope")));
        let mut store = open(&mut Real, &missing, None, dir.path()).unwrap();
        assert!(matches!(
            store.commit(&mut Real, &state, None),
            Err(CommitError::ReadBaseEnv { .. })
        ));
        assert!(!file.exists());
    }

    // Issue 11, item 1: `mark-active --force` over a corrupt store.
    #[test]
    fn force_commit_over_all_corrupt_needs_a_base_where_u_boot_owns_the_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        std::fs::write(&file, vec![0x55u8; 0x4000]).unwrap();
        let config = bootloader_config(&file, None);
        let rauc = config.rauc().unwrap();
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        assert!(matches!(store.contents, Contents::Unusable(_)));
        assert!(matches!(
            store.force_commit(&mut Real, &State::initial(&rauc)),
            Err(CommitError::NoBaseEnv { .. })
        ));
        assert_eq!(std::fs::read(&file).unwrap(), vec![0x55u8; 0x4000]);

        let base = dir.path().join("base.env");
        std::fs::write(&base, "bootcmd=run x\n").unwrap();
        let config = bootloader_config(&file, Some(&base));
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        store
            .force_commit(&mut Real, &State::initial(&rauc))
            .unwrap();
        let store = open(&mut Real, &config, None, dir.path()).unwrap();
        assert_eq!(store.contents, Contents::State(State::initial(&rauc)));
        let env = store.loaded.env.unwrap();
        assert_eq!(env.get("bootcmd"), Some(&b"run x"[..]));

        // Where the env is slotinit's own, the counters alone are fine.
        std::fs::write(&file, vec![0x55u8; 0x4000]).unwrap();
        let config = config_for(&file);
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        store
            .force_commit(&mut Real, &State::initial(&rauc))
            .unwrap();
        let env = open(&mut Real, &config, None, dir.path())
            .unwrap()
            .loaded
            .env
            .unwrap();
        assert_eq!(env.len(), 3, "{env}");
    }

    #[test]
    fn force_commit_keeps_the_variables_of_a_valid_copy() {
        // A valid env with an invalid counter is unusable; --force replaces
        // RAUC's variables and keeps U-Boot's, even with no base env.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("uboot.env");
        let env = Env::from_pairs([
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "zz"),
            ("bootcmd", "run y"),
        ])
        .unwrap();
        write_single(&file, &env);
        let config = bootloader_config(&file, None);
        let rauc = config.rauc().unwrap();
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        assert!(matches!(store.contents, Contents::Unusable(_)));
        store
            .force_commit(&mut Real, &State::initial(&rauc))
            .unwrap();
        assert_eq!(store.contents, Contents::State(State::initial(&rauc)));
        let store = open(&mut Real, &config, None, dir.path()).unwrap();
        assert_eq!(store.contents, Contents::State(State::initial(&rauc)));
        assert_eq!(
            store.loaded.env.unwrap().get("bootcmd"),
            Some(&b"run y"[..])
        );
    }

    // Issue 11, item 15: before the fix this was "crc mismatch" and counting stopped.
    #[test]
    fn single_copy_env_where_the_config_names_a_pair_says_what_to_change() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("uboot.env");
        let b = dir.path().join("uboot-redund.env");
        write_single(&a, &Env::from_pairs([("bootcmd", "run z")]).unwrap());
        let before = std::fs::read(&a).unwrap();
        let config = UbootEnvConfig {
            fw_env: vec![
                format!("{} 0x0 0x4000", a.display()),
                format!("{} 0x0 0x4000", b.display()),
            ],
            ..UbootEnvConfig::default()
        };
        let err = open(&mut Real, &config, None, dir.path()).err().unwrap();
        let text = crate::types::error_chain(&err);
        assert!(matches!(err, OpenError::WrongLayout { .. }), "{text}");
        assert!(text.contains("single-copy env"), "{text}");
        assert!(
            text.contains("keep only the bootstate.uboot-env.fw_env line"),
            "{text}"
        );
        assert_eq!(std::fs::read(&a).unwrap(), before);
        assert!(!b.exists());

        // The advice for each way of naming the env.
        let files = UbootEnvConfig::default();
        assert_eq!(
            layout_fix(&files, dir.path(), &a, 0, Layout::Single),
            "set bootstate.uboot-env.files = [\"uboot.env\"] (U-Boot keeps a single copy: no CONFIG_ENV_REDUNDANT)"
        );
        let raw = UbootEnvConfig {
            raw_offsets: vec![0, 0x4000],
            ..UbootEnvConfig::default()
        };
        assert!(layout_fix(&raw, dir.path(), &a, 0x4000, Layout::Single)
            .contains("bootstate.uboot-env.raw_offsets = [0x4000]"));
        let single = UbootEnvConfig {
            files: vec!["uboot.env".into()],
            ..UbootEnvConfig::default()
        };
        assert!(layout_fix(&single, dir.path(), &a, 0, Layout::Redundant)
            .contains("bootstate.uboot-env.files = [\"uboot.env\", "));
    }

    // Issue 11, item 14 through the store: the newer copy with an entry
    // slotinit's strict parser rejects is the current one, and nothing
    // (repair included) overwrites it.
    #[test]
    fn crc_valid_newer_copy_with_junk_is_used_and_not_repaired() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/env");
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("redundant-1.env");
        let b = dir.path().join("redundant-junk.env");
        std::fs::copy(fixtures.join("redundant-1.env"), &a).unwrap();
        std::fs::copy(fixtures.join("redundant-junk.env"), &b).unwrap();
        let before = std::fs::read(&b).unwrap();
        let config = UbootEnvConfig {
            fw_env: vec![
                format!("{} 0x0 0x4000", a.display()),
                format!("{} 0x0 0x4000", b.display()),
            ],
            ..UbootEnvConfig::default()
        };
        let mut store = open(&mut Real, &config, None, dir.path()).unwrap();
        let Contents::State(state) = store.contents.clone() else {
            panic!("{:?}", store.contents);
        };
        assert_eq!(
            state.order.iter().map(|b| b.as_str()).collect::<Vec<_>>(),
            ["B", "A"]
        );
        assert!(
            store.record().health.contains("no '='"),
            "{}",
            store.record().health
        );
        assert!(!store.repair(&mut Real).unwrap());
        store.commit(&mut Real, &state, None).unwrap();
        assert_eq!(
            std::fs::read(&b).unwrap(),
            before,
            "the current copy is kept"
        );
        assert_eq!(
            std::fs::read(&a).unwrap()[4],
            4,
            "the older copy is written"
        );
    }

    /// `fw_lock`: libubootenv's path by default, "" for none, absolute only,
    /// and in the backend's table only.
    #[test]
    fn fw_lock_is_an_absolute_path_or_none() {
        let foreign = |table: &str| {
            let text = format!("[bootstate]\nbackend = \"uboot-env\"\n{table}");
            crate::state::foreign_lock(&crate::config::Config::parse(&text, "t").unwrap())
        };
        assert_eq!(
            foreign(""),
            Some(std::path::PathBuf::from("/var/lock/fw_printenv.lock"))
        );
        assert_eq!(foreign("[bootstate.uboot-env]\nfw_lock = \"\"\n"), None);
        assert_eq!(
            foreign("[bootstate.uboot-env]\nfw_lock = \"/run/lock/env.lock\"\n"),
            Some(std::path::PathBuf::from("/run/lock/env.lock"))
        );
        let text =
            "[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\nfw_lock = \"x.lock\"\n";
        let msg = crate::types::error_chain(&crate::state::parse(text, "t").unwrap_err());
        assert!(msg.contains("bootstate.uboot-env.fw_lock"), "{msg}");
        let text = "[bootstate]\nbackend = \"uboot-env\"\nfw_lock = \"/x.lock\"\n";
        assert!(crate::state::parse(text, "t").is_err(), "flat fw_lock");
    }

    // Issue 11, item 17: check-config rejects absurd sizes and overlapping copies.
    #[test]
    fn config_rejects_absurd_sizes_and_overlapping_copies() {
        let cases: &[(&str, &str)] = &[
            ("size = 0x7fffffffffff", "bootstate.size"),
            ("size = 0x100001", "bootstate.size"),
            ("raw_offsets = [0, 0x2000]", "overlap"),
            ("raw_offsets = [-16384, -20480]", "overlap"),
            ("files = [\"uboot.env\", \"./UBOOT.ENV\"]", "both copies"),
            (
                "fw_env = [\"/dev/mmcblk0 0 0x4000\", \"/dev/mmcblk0 0x2000 0x4000\"]",
                "overlaps",
            ),
            (
                "fw_env = [\"/dev/mmcblk0 0 0x7fffffffffff\"]",
                "larger than",
            ),
            ("base_env = \"relative.env\"", "bootstate.base_env"),
            ("env_owner = \"uboot\"", "env_owner"),
        ];
        for (line, needle) in cases {
            let text = format!("[bootstate]\nbackend = \"uboot-env\"\n{line}\n");
            let err = crate::state::parse(&text, "t").unwrap_err();
            let msg = crate::types::error_chain(&err);
            assert!(msg.contains(needle), "{line}: {msg}");
            // The backend's own table names its own keys.
            let text =
                format!("[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\n{line}\n");
            let err = crate::state::parse(&text, "t").unwrap_err();
            let msg = crate::types::error_chain(&err);
            let needle = needle.replace("bootstate.", "bootstate.uboot-env.");
            assert!(msg.contains(&needle), "{line}: {msg}");
        }
        for line in [
            "size = 0x100000",
            "raw_offsets = [0, 0x4000]",
            "raw_offsets = [-32768, -16384]",
            "env_owner = \"bootloader\"\nbase_env = \"/etc/u-boot-initial-env\"",
        ] {
            let text = format!("[bootstate]\nbackend = \"uboot-env\"\n{line}\n");
            assert!(crate::state::parse(&text, "t").is_ok(), "{line}");
            // The same key in the backend's own table.
            let text =
                format!("[bootstate]\nbackend = \"uboot-env\"\n[bootstate.uboot-env]\n{line}\n");
            assert!(crate::state::parse(&text, "t").is_ok(), "{line}");
        }
    }

    /// The bootconfig partition on the recording fake, mounted on `MNT`.
    const MNT: &str = "/mnt/bootconfig";

    fn fake_partition() -> Partition {
        Partition {
            dev: "vda3".into(),
            disk: "vda".into(),
            number: 3,
            name: None,
            uuid: None,
        }
    }

    /// The calls that mount, remount or unmount, and those that write.
    fn mounts_and_writes(sys: &Fake) -> Vec<&str> {
        sys.calls
            .iter()
            .map(String::as_str)
            .filter(|c| {
                c.starts_with("mount ")
                    || c.starts_with("remount ")
                    || c.starts_with("umount ")
                    || (c.starts_with("open ") && c.contains("write"))
            })
            .collect()
    }

    // Issue 11, B, on the fake: the order of the calls, which the root-only
    // test above sees only as the mount's state afterwards.
    #[test]
    fn the_partition_is_read_write_only_around_a_write_and_unmounted_at_close() {
        let mut sys = Fake::default();
        let config = UbootEnvConfig::default();
        let mnt = Path::new(MNT);
        let mut store = open(&mut sys, &config, Some(&fake_partition()), mnt).unwrap();
        assert_eq!(store.contents, Contents::Fresh);
        // Reading mounts read-only and nothing else.
        let ro = "mount /dev/vda3 /mnt/bootconfig vfat ro,nosuid,nodev,noexec ";
        assert_eq!(mounts_and_writes(&sys), [ro]);
        assert!(sys.position("create-dir-all /mnt/bootconfig") < sys.position(ro));

        let state = store.state(&config).unwrap();
        store.commit(&mut sys, &state, None).unwrap();
        // A fresh pair: both copies written, in one read-write window.
        assert_eq!(
            mounts_and_writes(&sys),
            [
                ro,
                "remount /mnt/bootconfig rw,nosuid,nodev,noexec",
                "open /mnt/bootconfig/uboot.env write,create",
                "open /mnt/bootconfig/uboot-redund.env write,create",
                "remount /mnt/bootconfig ro,nosuid,nodev,noexec",
            ]
        );
        // Each copy is synced, and its new directory entry, before read-only again.
        let back_ro = sys
            .position("remount /mnt/bootconfig ro,nosuid,nodev,noexec")
            .unwrap();
        for synced in [
            "fsync /mnt/bootconfig/uboot.env",
            "fsync /mnt/bootconfig/uboot-redund.env",
            "fsync /mnt/bootconfig",
        ] {
            assert!(
                sys.position(synced).is_some_and(|i| i < back_ro),
                "{synced}"
            );
        }
        // The writers' lock is taken on the directory before anything is written.
        let locked = sys.position("flock /mnt/bootconfig").unwrap();
        assert!(locked < back_ro);

        store.close(&mut sys);
        assert_eq!(
            sys.calls.last().map(String::as_str),
            Some("umount /mnt/bootconfig")
        );

        // What was synced is on the (fake) medium: a new open reads the state,
        // still read-only.
        let before = sys.calls.len();
        let store = open(&mut sys, &config, Some(&fake_partition()), mnt).unwrap();
        assert_eq!(store.contents, Contents::State(state));
        let after: Vec<&str> = sys.calls[before..]
            .iter()
            .map(String::as_str)
            .filter(|c| c.contains("mount "))
            .collect();
        assert_eq!(after, [ro]);
    }

    #[test]
    fn a_partition_mounted_already_is_neither_mounted_nor_remounted_nor_unmounted() {
        let mut sys = Fake::default();
        sys.files.insert(
            "/proc/self/mountinfo".into(),
            b"36 25 8:3 / /mnt/bootconfig rw,relatime shared:1 - vfat /dev/vda3 rw\n".to_vec(),
        );
        sys.dirs.insert(MNT.into());
        let config = UbootEnvConfig::default();
        let mut store = open(&mut sys, &config, Some(&fake_partition()), Path::new(MNT)).unwrap();
        let state = store.state(&config).unwrap();
        store.commit(&mut sys, &state, None).unwrap();
        store.close(&mut sys);
        assert_eq!(
            mounts_and_writes(&sys),
            [
                "open /mnt/bootconfig/uboot.env write,create",
                "open /mnt/bootconfig/uboot-redund.env write,create",
            ]
        );
    }

    #[test]
    fn a_store_that_cannot_be_read_unmounts_what_it_mounted() {
        let mut sys = Fake {
            errno: vec![("open /mnt/bootconfig/uboot.env".into(), libc::EIO)],
            ..Fake::default()
        };
        let config = UbootEnvConfig::default();
        let err = open(&mut sys, &config, Some(&fake_partition()), Path::new(MNT))
            .err()
            .unwrap();
        assert!(
            matches!(err, OpenError::Store(EnvStoreError::Open { .. })),
            "{err}"
        );
        assert_eq!(
            mounts_and_writes(&sys),
            [
                "mount /dev/vda3 /mnt/bootconfig vfat ro,nosuid,nodev,noexec ",
                "umount /mnt/bootconfig",
            ]
        );
    }

    // A filesystem mounted read-write elsewhere refuses a read-only mount
    // (EBUSY): it is shared read-write, and never remounted.
    #[test]
    fn a_busy_read_only_mount_is_shared_read_write_and_never_remounted() {
        let mut sys = Fake {
            errno: vec![(
                "mount /dev/vda3 /mnt/bootconfig vfat ro".into(),
                libc::EBUSY,
            )],
            ..Fake::default()
        };
        let config = UbootEnvConfig::default();
        let mut store = open(&mut sys, &config, Some(&fake_partition()), Path::new(MNT)).unwrap();
        let state = store.state(&config).unwrap();
        store.commit(&mut sys, &state, None).unwrap();
        store.close(&mut sys);
        assert_eq!(
            mounts_and_writes(&sys),
            [
                "mount /dev/vda3 /mnt/bootconfig vfat ro,nosuid,nodev,noexec ",
                "mount /dev/vda3 /mnt/bootconfig vfat rw,nosuid,nodev,noexec ",
                "open /mnt/bootconfig/uboot.env write,create",
                "open /mnt/bootconfig/uboot-redund.env write,create",
                "umount /mnt/bootconfig",
            ]
        );
    }

    // A remount that fails is a failed commit, and nothing is written.
    #[test]
    fn a_failed_remount_read_write_writes_nothing() {
        let mut sys = Fake {
            fail: vec!["remount /mnt/bootconfig rw".into()],
            ..Fake::default()
        };
        let config = UbootEnvConfig::default();
        let mut store = open(&mut sys, &config, Some(&fake_partition()), Path::new(MNT)).unwrap();
        let state = store.state(&config).unwrap();
        let err = store.commit(&mut sys, &state, None).unwrap_err();
        assert!(
            matches!(err, CommitError::Remount { writable: true, .. }),
            "{err}"
        );
        assert!(sys
            .calls_starting("open /mnt/bootconfig/uboot")
            .iter()
            .all(|c| !c.contains("write")));
        assert_eq!(store.contents, Contents::Fresh);
    }

    // The raw path on the fake (module docs): with a FAT mounted read-only
    // by the store and a whole-file copy, the copy goes onto its own
    // sectors with the partition unmounted, then the FAT is mounted
    // read-only again and the copy read back through it. The fake's device
    // and files do not alias, so the read-back fails: a failed commit.
    #[test]
    fn a_copy_written_onto_its_sectors_must_read_back_through_the_filesystem() {
        use crate::state::uboot::envblock::{serialize, Header};
        const BASE: u32 = 100;
        let env = Env::from_pairs([
            ("BOOT_ORDER", "A B"),
            ("BOOT_A_LEFT", "3"),
            ("BOOT_B_LEFT", "3"),
        ])
        .unwrap();
        let copy = |flags| serialize(&env, 0x4000, Header::Redundant { flags }).unwrap();
        let mut sys = Fake {
            fs_type: Some(envstore::MSDOS_SUPER_MAGIC),
            fibmap_offset: BASE,
            ..Fake::default()
        };
        // The second copy is current, so the first is written.
        sys.files
            .insert("/mnt/bootconfig/uboot.env".into(), copy(1));
        sys.files
            .insert("/mnt/bootconfig/uboot-redund.env".into(), copy(2));
        let at = BASE as usize * 512;
        let mut device = vec![0u8; at + 0x4000];
        device[at..].copy_from_slice(&copy(1));
        sys.files.insert("/dev/vda3".into(), device);
        let config = UbootEnvConfig::default();
        let mut store = open(&mut sys, &config, Some(&fake_partition()), Path::new(MNT)).unwrap();
        let state = store.state(&config).unwrap();
        let err = store.commit(&mut sys, &state, None).unwrap_err();
        assert!(
            matches!(&err, CommitError::Raw { source, .. }
                if matches!(**source, EnvStoreError::NotWritten { .. })),
            "{err}"
        );
        let ro = "mount /dev/vda3 /mnt/bootconfig vfat ro,nosuid,nodev,noexec ";
        let order = [
            "open /dev/vda3 direct",
            "umount /mnt/bootconfig",
            "open /dev/vda3 write,direct,excl",
            "fdatasync /dev/vda3",
            ro,
        ];
        // Each one's last occurrence: the mount again comes after the write.
        let found: Vec<Option<usize>> = order
            .iter()
            .map(|c| sys.calls.iter().rposition(|l| l == c))
            .collect();
        assert!(
            found.windows(2).all(|w| w[0].is_some() && w[0] < w[1]),
            "{:?}",
            sys.calls
        );
        // The mount after the write is the second read-only one, and the
        // filesystem was never made writable.
        assert_eq!(sys.calls_starting("mount ").len(), 2);
        assert!(sys.calls_starting("remount").is_empty());
        // The new copy (flags 3) is on the device, where FIBMAP put the file.
        assert_eq!(sys.files[Path::new("/dev/vda3")][at + 4], 3);
        store.close(&mut sys);
        assert_eq!(
            sys.calls.last().map(String::as_str),
            Some("umount /mnt/bootconfig")
        );
    }

    // Issue 11, B: the partition is mounted read-only; read-write only while
    // a commit writes. Before the fix it was mounted read-write on open, so a
    // `status` or a bootloader-counted boot set and cleared the FAT dirty bit.
    #[test]
    #[ignore = "needs root (mounts): tests/run-all runs it with --include-ignored"]
    fn partition_is_read_only_except_while_writing() {
        if !crate::kernel::fake::in_own_mount_namespace(concat!(
            module_path!(),
            "::partition_is_read_only_except_while_writing"
        )) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("bootstate");
        // tmpfs ignores the device node; it stands in for the vfat partition.
        let config = UbootEnvConfig {
            fstype: "tmpfs".into(),
            ..UbootEnvConfig::default()
        };
        let part = Partition {
            dev: "slotinit-test".into(),
            disk: "none".into(),
            number: 1,
            name: None,
            uuid: None,
        };
        let read_only = |p: &Path| {
            nix::sys::statvfs::statvfs(p)
                .unwrap()
                .flags()
                .contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
        };
        let outcome = std::panic::catch_unwind(|| {
            let mut store = open(&mut Real, &config, Some(&part), &mnt).unwrap();
            assert!(is_mount_point(&mut Real, &mnt));
            assert!(read_only(&mnt), "opened read-write");
            assert_eq!(store.contents, Contents::Fresh);
            let state = store.state(&config).unwrap();
            store.commit(&mut Real, &state, None).unwrap();
            assert!(read_only(&mnt), "left read-write after the commit");
            let loaded = envstore::load(&store.location).unwrap();
            assert!(
                matches!(loaded.health, Health::BothGood { .. }),
                "{}",
                loaded.health
            );
            store.close(&mut Real);
            assert!(!is_mount_point(&mut Real, &mnt));
        });
        if outcome.is_err() {
            let _ = nix::mount::umount(&mnt);
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    /// A loop device over an ext2 image, detached on drop.
    struct Loop(String);

    impl Loop {
        fn new(image: &Path) -> Option<Self> {
            let mkfs = std::process::Command::new("mkfs.ext2")
                .args(["-q", "-F"])
                .arg(image)
                .status()
                .ok()?;
            let out = std::process::Command::new("losetup")
                .args(["-f", "--show"])
                .arg(image)
                .output()
                .ok()?;
            let dev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
            (mkfs.success() && out.status.success() && !dev.is_empty()).then_some(Self(dev))
        }
    }

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }

    // The booted system may have the partition mounted read-write already
    // (/boot/firmware); a read-only mount of it fails with EBUSY, so the store
    // shares it read-write, never remounts it, and leaves the other mount alone.
    #[test]
    #[ignore = "needs root (mounts): tests/run-all runs it with --include-ignored"]
    fn partition_mounted_read_write_elsewhere_is_shared() {
        if !crate::kernel::fake::in_own_mount_namespace(concat!(
            module_path!(),
            "::partition_mounted_read_write_elsewhere_is_shared"
        )) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("bootconfig.img");
        std::fs::write(&image, vec![0u8; 4 << 20]).unwrap();
        let dev = Loop::new(&image).expect("mkfs.ext2 and a loop device");
        let other = dir.path().join("firmware");
        std::fs::create_dir(&other).unwrap();
        let node = PathBuf::from(&dev.0);
        nix::mount::mount(
            Some(&node),
            &other,
            Some("ext2"),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let config = UbootEnvConfig {
            fstype: "ext2".into(),
            ..UbootEnvConfig::default()
        };
        let part = Partition {
            dev: node.strip_prefix("/dev").unwrap().display().to_string(),
            disk: "loop".into(),
            number: 1,
            name: None,
            uuid: None,
        };
        let mnt = dir.path().join("bootstate");
        let result = || {
            let mut store = open(&mut Real, &config, Some(&part), &mnt).unwrap();
            assert!(is_mount_point(&mut Real, &mnt));
            assert!(!store.remount);
            let state = store.state(&config).unwrap();
            store.commit(&mut Real, &state, None).unwrap();
            store.close(&mut Real);
            assert!(!is_mount_point(&mut Real, &mnt));
            // Written through the shared filesystem, seen by the other mount.
            assert!(other.join("uboot.env").exists());
            assert!(other.join("uboot-redund.env").exists());
            let rw = !nix::sys::statvfs::statvfs(&other)
                .unwrap()
                .flags()
                .contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
            assert!(rw, "the other mount must stay read-write");
        };
        let outcome = std::panic::catch_unwind(result);
        let _ = nix::mount::umount(&mnt);
        nix::mount::umount(&other).unwrap();
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
