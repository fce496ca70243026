//! A second backend for the tests, shaped like Raspberry Pi tryboot: the
//! firmware says which slot booted and whether as a trial (no counters);
//! `mark-good` commits the trial, `mark-active` arms a trial of a slot. It
//! keeps its state in one file in the mount directory. Being a module and a
//! line in a registry is all it takes (`state::tests`).

use crate::config::{BootStateConfig, Config};
use crate::disk::devices::Resolved;
use crate::kernel::sys::Sys;
use crate::state::decision::{DecideCtx, DecideError, Decision, Line, Outcome, Source};
use crate::state::{
    Backend, BootStatus, CheckError, Checked, CommitError, Entry, KeyError, Mark, MarkError,
    NextBoot, OpenError, Record,
};
use crate::types::Slot;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub(super) const BACKEND: Entry = Entry {
    name: "fake",
    legacy_keys: &[],
    check,
    reference,
    open,
    unavailable,
    bootloader_decides: |_| true,
    devices: |_| Vec::new(),
    filesystems: |_| Vec::new(),
    foreign_lock: |_| None,
};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FakeConfig {
    /// The slot committed when nothing is stored yet.
    committed: Option<Slot>,
}

fn table(bs: &BootStateConfig) -> Result<FakeConfig, CheckError> {
    let Some(value) = bs.keys.get("fake") else {
        return Ok(FakeConfig::default());
    };
    value.clone().try_into().map_err(|e: toml::de::Error| {
        CheckError::Key(KeyError {
            table: "bootstate.fake".into(),
            key: String::new(),
            in_value: false,
            message: e.message().to_string(),
        })
    })
}

fn check(bs: &BootStateConfig) -> Result<Checked, CheckError> {
    table(bs).map(|_| Checked::default())
}

fn reference() -> toml::Table {
    let mut keys = toml::Table::new();
    keys.insert("committed".into(), toml::Value::String("a".into()));
    [("fake".to_string(), toml::Value::Table(keys))]
        .into_iter()
        .collect()
}

fn unavailable(_: &BootStateConfig, ctx: &DecideCtx) -> Result<Outcome, DecideError> {
    crate::state::decision::follow_bootloader(ctx)
}

/// The firmware's word and the committed slot, as the file holds them:
/// "<committed> <trial slot or ->".
pub(crate) struct Fake {
    file: PathBuf,
    committed: Slot,
    trial: Option<Slot>,
}

fn open(
    sys: &mut dyn Sys,
    config: &Config,
    _: &Resolved,
    mount_dir: &Path,
) -> Result<Box<dyn Backend>, OpenError> {
    let cfg = table(&config.bootstate)?;
    let file = mount_dir.join("fake-state");
    let bytes = sys.read_file(&file).ok().flatten().unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let mut words = text.split_whitespace();
    let committed = words
        .next()
        .and_then(Slot::parse)
        .or(cfg.committed)
        .unwrap_or(Slot::A);
    let trial = words.next().and_then(Slot::parse);
    Ok(Box::new(Fake {
        file,
        committed,
        trial,
    }))
}

impl Fake {
    fn save(&self, sys: &mut dyn Sys) -> Result<(), String> {
        let trial = self.trial.map_or("-", |s| s.letter());
        sys.write_file(
            &self.file,
            format!("{} {trial}\n", self.committed).as_bytes(),
        )
        .map_err(|e| e.to_string())
    }
}

impl Backend for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn record(&self) -> Record {
        Record {
            location: self.file.display().to_string(),
            health: "ok".into(),
            order: [Some(self.committed), self.trial]
                .into_iter()
                .flatten()
                .map(|s| s.to_string())
                .collect(),
            ..Record::default()
        }
    }

    fn decide(&mut self, sys: &mut dyn Sys, ctx: &DecideCtx) -> Result<Outcome, DecideError> {
        // The tryboot flag is one-shot: the firmware boots the trial once.
        let slot = self.trial.take().unwrap_or(self.committed);
        self.save(sys).map_err(|e| DecideError::State(e.into()))?;
        let source = if ctx.usable(slot) {
            Source::Bootloader
        } else {
            Source::Fallback
        };
        let slot = if ctx.usable(slot) { slot } else { slot.other() };
        Ok(Outcome {
            decision: Decision { slot, source },
            fallback: None,
            lines: vec![Line::Note(format!("firmware booted slot {slot}"))],
        })
    }

    fn commit_good(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<bool, CommitError> {
        self.committed = slot;
        self.save(sys)
            .map(|()| true)
            .map_err(|message| CommitError { slot, message })
    }

    fn mark(
        &mut self,
        sys: &mut dyn Sys,
        how: Mark,
        slot: Slot,
        _force: bool,
    ) -> Result<String, MarkError> {
        match how {
            Mark::Good => self.committed = slot,
            Mark::Active => self.trial = Some(slot),
            Mark::Bad if slot == self.committed => {
                return Err(MarkError::Refused(format!(
                    "slot {slot} is the committed slot"
                )))
            }
            Mark::Bad => self.trial = None,
        }
        self.save(sys).map_err(MarkError::Write)?;
        Ok(format!("slot {slot} marked {}", how.verb()))
    }

    fn boot_next(&mut self, sys: &mut dyn Sys, slot: Slot) -> Result<Option<String>, MarkError> {
        if slot == self.committed {
            return Ok(None);
        }
        self.trial = Some(slot);
        self.save(sys).map_err(MarkError::Write)?;
        Ok(Some("0 tryboot".into()))
    }

    fn next_boot(&self) -> NextBoot {
        NextBoot::InOrder
    }

    fn status(&self, booted: Option<Slot>) -> BootStatus {
        let boot = match booted {
            Some(s) if s == self.committed => "committed",
            Some(_) => "trial",
            None => "unknown",
        };
        BootStatus {
            boot,
            attempts_left: None,
        }
    }

    fn close(self: Box<Self>, _: &mut dyn Sys) {}
}
