//! What each fuzz target asserts about one input: never a panic, and the stated
//! properties of the parser under test. One function per target, named after it.
//!
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`) and by
//! `tests/fuzz_regressions.rs`, which includes this file with `#[path]` so that
//! every saved input replays through exactly the same checks under `cargo test`.
//! Hence no dependency beyond slotinit's own (`crc32fast`, `serde_json`, `toml`).

use std::io::Cursor;
use std::path::PathBuf;

use slotinit::config::{ConfigError, Partitions};
use slotinit::disk::devices::{self, Partition};
use slotinit::disk::gpt::{self, GptError};
use slotinit::kernel::cmdline::{self, BootArgs, Cmdline};
use slotinit::state::sources;
use slotinit::state::uboot::config::Counter;
use slotinit::state::uboot::decide::{self as slot, Inputs};
use slotinit::state::uboot::envblock::{
    self, CopyIndex, Env, EnvError, Header, Layout, RedundantCopy,
};
use slotinit::state::uboot::fwenv::{self, FwEnvConfig};
use slotinit::state::uboot::rauc::Bootnames;
use slotinit::state::uboot::rauc::{self, Bootname, Change, Chosen, State};
use slotinit::types::{self, Slot};

/// The sector size the GPT checks use; the fixture is a 512-byte-sector disk.
const SECTOR: usize = 512;

// ---------------------------------------------------------------------------
// envblock

/// `data` as a U-Boot env block: the stored CRC as is, then with the CRC made
/// right so that the fuzzer reaches the entries; round trip of what parses;
/// `select_current` on the first bytes.
pub fn envblock(data: &[u8]) {
    // As stored: the public entry points agree with verify + parse_data.
    let single = envblock::parse_single(data);
    let via_verify = envblock::verify(data, Layout::Single).and_then(|v| {
        assert_eq!(v.flags, None);
        envblock::parse_data(v.data)
    });
    assert_eq!(single, via_verify);
    let redundant = envblock::parse_redundant(data);
    let via_verify = envblock::verify(data, Layout::Redundant).and_then(|v| {
        assert_eq!(v.data.len() + 5, data.len());
        Ok(RedundantCopy {
            flags: v
                .flags
                .unwrap_or_else(|| panic!("redundant copy without flags")),
            env: envblock::parse_data(v.data)?,
        })
    });
    assert_eq!(redundant, via_verify);

    // With a correct CRC, a block is exactly its data area.
    let flags = data.get(4).copied().unwrap_or(0);
    for header in [Header::Single, Header::Redundant { flags }] {
        let header_len = header.layout().header_len();
        let Some(area) = data.get(header_len..).filter(|a| !a.is_empty()) else {
            continue;
        };
        let mut block = data.to_vec();
        let crc = crc32fast::hash(area);
        block[..4].copy_from_slice(&crc.to_le_bytes());
        let parsed = envblock::parse_data(area);
        match header {
            Header::Single => assert_eq!(envblock::parse_single(&block), parsed),
            Header::Redundant { flags } => assert_eq!(
                envblock::parse_redundant(&block),
                parsed.clone().map(|env| RedundantCopy { flags, env })
            ),
        }
        if let Ok(env) = parsed {
            env_round_trip(&env, header, area.len(), data.first().copied());
        }
    }

    // The lenient reader the store uses for CRC-valid copies, on the data
    // areas as they are; and the bytes as mkenvimage's text input.
    for header_len in [0, 4, 5] {
        lenient(data.get(header_len..).unwrap_or_default());
    }
    env_text(data);

    let valid = data.get(2).copied().unwrap_or(0b11);
    let first = data.first().copied().filter(|_| valid & 1 != 0);
    let second = data.get(1).copied().filter(|_| valid & 2 != 0);
    select_current(first, second);
}

/// `parse_data_lenient` is `parse_data` wherever that accepts (same env, no
/// anomaly), and otherwise reports first what `parse_data` failed on; what it
/// reads is a valid env that a rewrite makes readable to the strict parser.
fn lenient(data: &[u8]) {
    let strict = envblock::parse_data(data);
    let (env, anomalies) = envblock::parse_data_lenient(data);
    match &strict {
        Ok(strict) => {
            assert_eq!(&env, strict);
            assert!(anomalies.is_empty(), "{anomalies:?}");
        }
        Err(e) => assert_eq!(anomalies.first(), Some(e), "{anomalies:?}"),
    }
    for a in &anomalies {
        assert!(
            matches!(
                a,
                EnvError::Unterminated
                    | EnvError::MissingEquals { .. }
                    | EnvError::EmptyName { .. }
            ),
            "{a:?}"
        );
        if let EnvError::MissingEquals { offset } | EnvError::EmptyName { offset } = a {
            assert!(*offset < data.len(), "{a:?}");
        }
    }
    // Unterminated at most once, and only as the last word.
    let unterminated = anomalies
        .iter()
        .filter(|a| **a == EnvError::Unterminated)
        .count();
    assert!(unterminated <= 1, "{anomalies:?}");
    valid_env(&env);
    // Duplicates collapse: at most the bytes it came from, and a `\0` closing
    // the last entry and the list when the area had none.
    assert!(
        env.data_len() <= data.len() + 2,
        "{} > {}",
        env.data_len(),
        data.len()
    );
    strict_round_trip(&env);
}

/// Every name and value of `env` is one U-Boot can store: a set_bytes of
/// each into a fresh env is accepted and gives the same env.
fn valid_env(env: &Env) {
    let mut again = Env::new();
    for (name, value) in env.iter() {
        assert!(
            again.set_bytes(name, value).is_ok(),
            "{:?}={:?}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        );
    }
    assert_eq!(&again, env);
}

/// `env` written as a single copy of exactly its size reads back strictly.
fn strict_round_trip(env: &Env) {
    let size = Header::Single.layout().header_len() + env.data_len();
    let block = envblock::serialize(env, size, Header::Single)
        .unwrap_or_else(|e| panic!("an env does not fit its own size: {e}"));
    assert_eq!(envblock::parse_single(&block).as_ref(), Ok(env));
    let data = &block[Header::Single.layout().header_len()..];
    assert_eq!(
        envblock::parse_data_lenient(data),
        (env.clone(), Vec::new())
    );
}

/// `parse_text` (mkenvimage's `name=value` lines) never panics; what it accepts
/// is a valid env that survives `serialize` → parse, and, where every variable
/// can be written as one line, its text form parses back to it. Errors name a
/// line of the text.
fn env_text(data: &[u8]) {
    let env = match envblock::parse_text(data) {
        Ok(env) => env,
        Err(e) => {
            let line = match &e {
                envblock::TextError::MissingEquals { line }
                | envblock::TextError::Invalid { line, .. } => *line,
            };
            let lines = data.split(|&b| b == b'\n').count();
            assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
            let _ = e.to_string();
            return;
        }
    };
    valid_env(&env);
    strict_round_trip(&env);
    // One `name=value` line per variable: no newline, and no final backslash
    // that would join the next line (a name cannot start with `#`: such a
    // line is a comment).
    let one_line = env.iter().all(|(name, value)| {
        !name.contains(&b'\n')
            && !value.contains(&b'\n')
            && !value.ends_with(b"\\")
            && !name.starts_with(b"#")
    });
    if one_line {
        let mut text = Vec::new();
        for (name, value) in env.iter() {
            text.extend_from_slice(name);
            text.push(b'=');
            text.extend_from_slice(value);
            text.push(b'\n');
        }
        assert_eq!(envblock::parse_text(&text).as_ref(), Ok(&env));
    }
}

/// serialize → parse gives `env` back whenever it fits, and TooLarge exactly
/// when it does not; a rewrite of what was read is byte-identical.
fn env_round_trip(env: &Env, header: Header, area_len: usize, extra: Option<u8>) {
    let header_len = header.layout().header_len();
    let needed = env.data_len();
    // Duplicates collapse, so an env never needs more than the area it came from.
    assert!(needed <= area_len, "{needed} > {area_len}");
    let _ = env.to_string();
    let mut sizes = vec![
        header_len + area_len,
        header_len + needed,
        header_len + needed - 1,
    ];
    sizes.extend(extra.map(usize::from));
    for size in sizes {
        let available = size.saturating_sub(header_len);
        match envblock::serialize(env, size, header) {
            Ok(block) => {
                assert!(needed <= available);
                assert_eq!(block.len(), size);
                let again = match header {
                    Header::Single => envblock::parse_single(&block),
                    Header::Redundant { flags } => envblock::parse_redundant(&block).map(|c| {
                        assert_eq!(c.flags, flags);
                        c.env
                    }),
                };
                assert_eq!(again.as_ref(), Ok(env));
                let rewritten = again.and_then(|e| envblock::serialize(&e, size, header));
                assert_eq!(rewritten, Ok(block));
            }
            Err(e) => assert_eq!(
                e,
                EnvError::TooLarge {
                    needed,
                    available,
                    size
                }
            ),
        }
        // Fits iff the data area is big enough.
        assert_eq!(
            envblock::serialize(env, size, header).is_ok(),
            needed <= available
        );
    }
}

/// U-Boot's rules: the valid copy if only one is; equal flags pick the first;
/// the result does not depend on which copy is called first; the next flags
/// always win over the current ones.
fn select_current(first: Option<u8>, second: Option<u8>) {
    let pick = envblock::select_current(first, second);
    match (first, second) {
        (None, None) => assert_eq!(pick, Err(EnvError::NoValidCopy)),
        (Some(_), None) => assert_eq!(pick, Ok(CopyIndex::First)),
        (None, Some(_)) => assert_eq!(pick, Ok(CopyIndex::Second)),
        (Some(a), Some(b)) if a == b => assert_eq!(pick, Ok(CopyIndex::First)),
        (Some(a), Some(b)) => {
            let swapped = envblock::select_current(Some(b), Some(a));
            assert_eq!(swapped.map(CopyIndex::other), pick);
        }
    }
    if let Some(a) = first {
        let next = envblock::next_flags(a);
        assert_eq!(
            envblock::select_current(Some(a), Some(next)),
            Ok(CopyIndex::Second)
        );
    }
}

// ---------------------------------------------------------------------------
// cmdline

/// The tokenizer's invariants (the kernel's `next_arg()`: quotes group
/// whitespace and stay inside words, the first `=` after index 0 splits, the
/// kernel's `isspace()` separates, `--` ends the parameters), parse ∘ render ∘
/// parse = parse, and BootArgs agreeing with the params it was built from.
pub fn cmdline(data: &[u8]) {
    let c = Cmdline::parse(data);
    let has_quotes = data.contains(&b'"');
    for (key, value) in c.params() {
        // `=foo` is a param named `=foo`; any later `=` starts the value.
        assert!(
            !key.bytes().skip(1).any(|b| b == b'='),
            "key {key:?} has '=' after its first byte"
        );
        // A value needs an `=` after the key's first byte, so a key before it.
        assert!(!key.is_empty() || value.is_none(), "empty key with a value");
        // A bare `--` ends the parameters; it is never one.
        assert!(!(key == "--" && value.is_none()), "bare -- kept as a param");
        assert!(!key.contains('\0') && !value.unwrap_or_default().contains('\0'));
        if !has_quotes {
            // Only quotes can put whitespace into a param or make an empty one.
            assert!(!key.bytes().any(cmdline::is_kernel_space), "key {key:?}");
            let value = value.unwrap_or_default();
            assert!(!value.bytes().any(cmdline::is_kernel_space), "{value:?}");
            assert!(!key.is_empty(), "empty param");
        }
        assert!(c.has(key));
    }
    // get(): the last occurrence of the key decides (a bare key gives None);
    // values(): every value in order. Quadratic, so only for the first params.
    for (key, _) in c.params().take(32) {
        let last = c.params().filter(|(k, _)| *k == key).last();
        assert_eq!(c.get(key), last.and_then(|(_, v)| v), "{key:?}");
        let all: Vec<&str> = c
            .params()
            .filter(|(k, _)| *k == key)
            .filter_map(|(_, v)| v)
            .collect();
        assert_eq!(c.values(key), all, "{key:?}");
        let differ = all.iter().any(|v| Some(v) != all.first());
        assert_eq!(cmdline::conflict(&c, key).is_some(), differ, "{key:?}");
    }

    // Without quotes nothing groups: every param written `k` or `k=v`, and
    // init's words after a `--`, parse back to the same Cmdline.
    if !has_quotes {
        let mut rendered: Vec<String> = c
            .params()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k.to_string(),
            })
            .collect();
        if !c.init_args().is_empty() {
            rendered.push("--".into());
            rendered.extend(c.init_args().iter().cloned());
        }
        let again = Cmdline::parse(rendered.join(" ").as_bytes());
        assert!(again.params().eq(c.params()), "{rendered:?}");
        assert_eq!(again, c, "{rendered:?}");
    }
    // The params without a quote of their own, each quoted whole ("k=v w"),
    // parse back to themselves whatever whitespace they hold.
    let plain: Vec<(&str, Option<&str>)> = c
        .params()
        .filter(|(k, v)| !k.contains('"') && !v.unwrap_or_default().contains('"'))
        .collect();
    let quoted: Vec<String> = plain
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("\"{k}={v}\""),
            None => format!("\"{k}\""),
        })
        .collect();
    let again = Cmdline::parse(quoted.join(" ").as_bytes());
    assert!(again.params().eq(plain.iter().copied()), "{quoted:?}");

    // init's argv: at most the kernel's limit; each word a bare param without
    // a `.` or one of the words after `--`.
    let argv = c.init_argv();
    assert!(argv.len() <= cmdline::MAX_INIT_ARGS, "{}", argv.len());
    for word in &argv {
        let bare = c
            .params()
            .any(|(k, v)| v.is_none() && k == word && !k.contains('.'));
        assert!(bare || c.init_args().contains(word), "{word:?}");
        assert!(!cmdline::CONSUMED.contains(&word.as_str()) || c.init_args().contains(word));
    }
    // The words after `--` always follow, cut only at the limit.
    let init_args = c.init_args();
    assert!(argv.len() >= init_args.len().min(cmdline::MAX_INIT_ARGS));
    if argv.len() < cmdline::MAX_INIT_ARGS {
        assert!(argv.ends_with(init_args), "{argv:?}");
    }

    // Module options: one per dotted key with a module and an option, the
    // module named as modprobe compares it.
    let options = c.module_options();
    let dotted = c
        .params()
        .filter(|(k, _)| {
            k.split_once('.')
                .is_some_and(|(m, o)| !m.is_empty() && !o.is_empty())
        })
        .count();
    assert_eq!(options.len(), dotted);
    for o in &options {
        assert!(!o.module.is_empty() && !o.module.contains('-'), "{o:?}");
        assert!(!o.module.contains('.') && !o.option.is_empty(), "{o:?}");
        let _ = o.render();
    }

    let args = BootArgs::from_cmdline(&c);
    assert_eq!(args.debug, c.has("slotinit.debug"));
    assert_eq!(
        args.emergency_shell,
        c.get("slotinit.emergency") == Some("shell")
    );
    // A slot given twice with different values is no override at all.
    assert_eq!(
        args.slot_override,
        c.get("slotinit.slot")
            .filter(|_| cmdline::conflict(&c, "slotinit.slot").is_none())
            .and_then(Slot::parse)
    );
    assert_eq!(args.init_argv, argv);
    match &args.init {
        Some(init) => {
            assert!(init.starts_with('/'));
            assert_eq!(Some(init.as_str()), c.get("init"));
        }
        None => assert!(!c.get("init").is_some_and(|i| i.starts_with('/'))),
    }
    assert!(args.warnings.len() <= 3, "{:?}", args.warnings);

    // The slot sources read the same cmdline; against the rpi layout.
    let resolved = devices::resolve(&rpi_partitions(), &Partitions::default());
    let names = bootnames();
    for dt_partition in [None, Some(2), Some(5)] {
        let facts = sources::Facts {
            cmdline: &c,
            rauc_key: "rauc.slot",
            names: &names,
            resolved: &resolved,
            dt_partition,
        };
        let (hint, log) = sources::find(&types::DEFAULT_ORDER, &facts);
        assert!(!log.is_empty() && log.len() <= types::DEFAULT_ORDER.len());
        // rauc.slot= is asked first: it speaks whenever it is given, and
        // names no slot when two values differ.
        // (values(), not get(): `rauc.slot=A rauc.slot` still says A.)
        if let Some(raw) = c.values("rauc.slot").first() {
            let hint = hint
                .as_ref()
                .unwrap_or_else(|| panic!("rauc.slot={raw:?} gave no hint"));
            let expected = Some(*raw)
                .filter(|_| cmdline::conflict(&c, "rauc.slot").is_none())
                .and_then(|raw| names.slot(raw));
            assert_eq!(hint.slot, expected);
        }
        if let (Some(hint), Some(raw)) = (&hint, c.get("rauc.slot")) {
            let expected = Some(raw)
                .filter(|_| cmdline::conflict(&c, "rauc.slot").is_none())
                .and_then(|raw| names.slot(raw));
            assert_eq!(hint.slot, expected);
        }
    }
}

// ---------------------------------------------------------------------------
// config

/// `state::parse` (the config and its boot-state backend's keys, as
/// `check-config` and the init check them) never panics; an accepted config
/// serialized back to TOML is accepted again and equal (the validation holds
/// for what it let through); errors locate a line of the text.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match slotinit::state::parse(&text, "fuzz") {
        Ok((config, _)) => {
            let again = toml::to_string(&config)
                .unwrap_or_else(|e| panic!("an accepted config does not serialize: {e}"));
            match slotinit::state::parse(&again, "fuzz-again") {
                Ok((reparsed, _)) => assert_eq!(reparsed, config, "{again}"),
                Err(e) => panic!("accepted config rejected after a round trip: {e}\n{again}"),
            }
            // Matching its layout against a real disk is defined for every valid config.
            let found = rpi_partitions();
            let resolved = devices::resolve(&found, &config.partitions);
            let _ = devices::all_present(&found, &config.partitions);
            let _ = devices::any_system_present(&found, &config.partitions);
            for slot in Slot::ALL {
                assert!(!devices::slot_dir(&resolved, slot).contains('/'));
            }
            let _ = devices::by_slot_links(&resolved, Slot::A);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("fuzz"), "{message}");
            if let ConfigError::Parse { line, column, .. } = e {
                assert!(line <= text.lines().count() + 1, "line {line}: {message}");
                assert!((line == 0) == (column == 0), "{line}:{column}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// gpt

/// `data` as the start of a 512-byte-sector disk: LBA 1 holds the header.
/// Parsed as is, then with both CRCs made right; the pure parsers and
/// `gpt::read` of the same bytes in a file must agree.
pub fn gpt(data: &[u8]) {
    let mut fixed = data.to_vec();
    fix_gpt_crcs(&mut fixed);
    let file = TempFile::new("gpt");
    for image in [data, &fixed[..]] {
        // The pure checks first: they stop a header read() must not act on.
        let pure = gpt_pure(image);
        let from_file = file.write(image).and_then(|path| {
            gpt::read(&path, SECTOR as u64).map_err(|e| std::io::Error::other(e.to_string()))
        });
        assert_eq!(from_file.ok(), pure.ok(), "read() and the parsers differ");
        gpt_kernel(image);
    }
    // The same table mirrored to a sector appended as the last LBA, with the
    // primary broken: the kernel's `gpt` reads it from there, and only with `gpt`.
    if let Some(mirrored) = mirror_to_alternate(&fixed) {
        gpt_kernel(&mirrored);
        let last = (mirrored.len() / SECTOR - 1) as u64;
        // As valid a primary as the kernel reads, unless its array starts at or
        // before the header sector the mirror broke.
        let primary = gpt_kernel_model(&fixed, 1, last - 1).filter(|_| {
            gpt::parse_header(&fixed[SECTOR..2 * SECTOR]).is_ok_and(|h| h.entries_lba >= 2)
        });
        let forced = gpt::find_valid(&mut Cursor::new(&mirrored[..]), SECTOR as u64, true);
        if let Some(entries) = primary {
            let table = forced.unwrap_or_else(|e| panic!("mirrored table not found: {e}"));
            assert_eq!(table.which, gpt::Which::Alternate);
            assert_eq!(table.entries, entries);
        }
        let plain = gpt::find_valid(&mut Cursor::new(&mirrored[..]), SECTOR as u64, false);
        assert!(plain.is_err(), "{plain:?}");
    }
}

/// `gpt::find_valid` against a model of the kernel's `find_valid_gpt()`
/// (block/partitions/efi.c) built from the pure parsers: without `gpt` the MBR
/// must be protective and only the primary counts; with it the alternate at
/// the last LBA is read when the primary is not valid. Its primary is always
/// one `gpt::read` accepts too.
fn gpt_kernel(image: &[u8]) {
    let last_lba = (image.len() / SECTOR).checked_sub(1);
    let model = |force: bool| -> Option<gpt::Table> {
        let last_lba = last_lba? as u64;
        if !force && !gpt::is_pmbr_valid(&image[..SECTOR]) {
            return None;
        }
        if let Some(entries) = gpt_kernel_model(image, 1, last_lba) {
            return Some(gpt::Table {
                which: gpt::Which::Primary,
                entries,
            });
        }
        if !force {
            return None;
        }
        gpt_kernel_model(image, last_lba, last_lba).map(|entries| gpt::Table {
            which: gpt::Which::Alternate,
            entries,
        })
    };
    for force in [false, true] {
        let found = gpt::find_valid(&mut Cursor::new(image), SECTOR as u64, force);
        if let Err(e) = &found {
            let _ = e.to_string();
        }
        let found = found.ok();
        assert_eq!(found, model(force), "force_gpt {force}");
        if let Some(table) = found.filter(|t| t.which == gpt::Which::Primary) {
            assert_eq!(gpt_pure(image).ok(), Some(table.entries));
        }
    }
}

/// `is_gpt_valid()` at `lba` from the pure parsers: a header there naming
/// `lba` as its own, usable LBAs within the disk, a non-empty entry array
/// wholly on the disk, both CRCs right.
fn gpt_kernel_model(image: &[u8], lba: u64, last_lba: u64) -> Option<Vec<gpt::Entry>> {
    if lba > last_lba {
        return None;
    }
    let at = usize::try_from(lba).ok()?.checked_mul(SECTOR)?;
    let header = gpt::parse_header(image.get(at..at + SECTOR)?).ok()?;
    if header.my_lba != lba
        || header.first_usable_lba > last_lba
        || header.last_usable_lba > last_lba
        || header.last_usable_lba < header.first_usable_lba
        || header.count == 0
    {
        return None;
    }
    let start = usize::try_from(header.entries_lba)
        .ok()?
        .checked_mul(SECTOR)?;
    let len = header.count as usize * header.entry_size as usize;
    let array = image.get(start..start.checked_add(len)?)?;
    gpt::parse_entries(&header, array).ok()
}

/// `image` (CRCs fixed, cut to whole sectors) with a sector appended that
/// holds its primary header as the alternate (`my_lba` and `alternate_lba`
/// swapped, CRC fixed), and the primary's signature broken; None when the
/// image has no primary header to copy.
fn mirror_to_alternate(image: &[u8]) -> Option<Vec<u8>> {
    let sectors = image.len() / SECTOR;
    if sectors < 2 || image.get(SECTOR..SECTOR + 8)? != b"EFI PART" {
        return None;
    }
    let header = &image[SECTOR..2 * SECTOR];
    let size = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
    if !(92..=SECTOR).contains(&size) {
        return None;
    }
    let mut alt = header.to_vec();
    alt[24..32].copy_from_slice(&(sectors as u64).to_le_bytes());
    alt[32..40].copy_from_slice(&1u64.to_le_bytes());
    alt[16..20].fill(0);
    let crc = crc32fast::hash(&alt[..size]);
    alt[16..20].copy_from_slice(&crc.to_le_bytes());
    let mut out = image[..sectors * SECTOR].to_vec();
    out.extend_from_slice(&alt);
    out[SECTOR] ^= 0xff;
    Some(out)
}

/// What `gpt::read` should return for an image, from the pure parsers alone.
fn gpt_pure(image: &[u8]) -> Result<Vec<gpt::Entry>, String> {
    let block = image.get(SECTOR..).unwrap_or_default();
    let block = &block[..block.len().min(SECTOR)];
    let header = gpt::parse_header(block).map_err(|e| e.to_string())?;
    // read() allocates the whole array before reading it: keep that small.
    let array_len = u64::from(header.count) * u64::from(header.entry_size);
    assert!(
        header.entry_size >= 128 && array_len <= 4096 * 128,
        "{header:?}"
    );
    if block.len() < SECTOR {
        return Err("short header sector".into());
    }
    let start = usize::try_from(header.entries_lba)
        .ok()
        .and_then(|lba| lba.checked_mul(SECTOR))
        // lseek(2) takes an off_t.
        .filter(|start| i64::try_from(*start).is_ok())
        .ok_or("entries beyond the reach of lseek")?;
    // read() reads an empty array (zero bytes) wherever the header puts it.
    let array = match array_len {
        0 => &[][..],
        _ => image.get(start..).ok_or("entries beyond the image")?,
    };
    let entries = match gpt::parse_entries(&header, array) {
        Ok(entries) => entries,
        Err(GptError::Malformed(_)) => return Err("short entry array".into()),
        Err(e) => return Err(e.to_string()),
    };
    let mut last = 0;
    for e in &entries {
        assert!(e.number > last && e.number <= header.count, "{e:?}");
        last = e.number;
        let groups: Vec<usize> = e.uuid.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{}", e.uuid);
        assert!(e
            .uuid
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)));
        assert!(!e.name.contains('\0'), "{:?}", e.name);
    }
    Ok(entries)
}

/// Recomputes the entry-array CRC and then the header CRC, where the header's
/// own fields say where they are; leaves anything out of range alone.
fn fix_gpt_crcs(image: &mut [u8]) {
    let Some(header) = image.get(SECTOR..(SECTOR + 92).min(image.len())) else {
        return;
    };
    if header.len() < 92 || &header[..8] != b"EFI PART" {
        return;
    }
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let size = le32(header, 12) as usize;
    let lba = u64::from_le_bytes(header[72..80].try_into().unwrap_or_default());
    let count = le32(header, 80) as usize;
    let entry_size = le32(header, 84) as usize;
    let array = usize::try_from(lba)
        .ok()
        .and_then(|lba| lba.checked_mul(SECTOR))
        .zip(count.checked_mul(entry_size))
        .and_then(|(start, len)| image.get(start..start.checked_add(len)?));
    if let Some(array) = array {
        let crc = crc32fast::hash(array);
        image[SECTOR + 88..SECTOR + 92].copy_from_slice(&crc.to_le_bytes());
    }
    if !(92..=SECTOR).contains(&size) || SECTOR + size > image.len() {
        return;
    }
    image[SECTOR + 16..SECTOR + 20].fill(0);
    let crc = crc32fast::hash(&image[SECTOR..SECTOR + size]);
    image[SECTOR + 16..SECTOR + 20].copy_from_slice(&crc.to_le_bytes());
}

/// A scratch file for one thread, rewritten for each input.
struct TempFile(PathBuf);

impl TempFile {
    fn new(what: &str) -> Self {
        let thread = format!("{:?}", std::thread::current().id());
        let name: String = thread.chars().filter(char::is_ascii_digit).collect();
        // tmpfs when there is one: the file is rewritten for every input.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        Self(dir.join(format!(
            "slotinit-fuzz-{what}-{}-{name}",
            std::process::id()
        )))
    }

    fn write(&self, bytes: &[u8]) -> std::io::Result<PathBuf> {
        std::fs::write(&self.0, bytes)?;
        Ok(self.0.clone())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---------------------------------------------------------------------------
// uevent

/// `disk\0uevent text`: `from_uevent` takes its fields from the text's lines,
/// and what it builds survives the handoff's JSON.
pub fn uevent(data: &[u8]) {
    let (disk, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"vda"[..], data),
    };
    let disk = String::from_utf8_lossy(disk);
    let text = String::from_utf8_lossy(text);
    let Some(part) = Partition::from_uevent(&text, &disk) else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    let last = |key: &str| {
        lines
            .iter()
            .rev()
            .find_map(|l| l.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
    };
    assert_eq!(last("DEVTYPE"), Some("partition"));
    assert_eq!(last("DEVNAME"), Some(part.dev.as_str()));
    assert_eq!(last("PARTNAME"), part.name.as_deref());
    assert!(lines
        .iter()
        .any(|l| l.strip_prefix("PARTN=").and_then(|n| n.parse().ok()) == Some(part.number)));
    assert_eq!(part.disk, disk);
    assert_eq!(part.uuid, None);
    // The kernel's DEVNAME is relative; slotinit trusts sysfs on that.
    assert_eq!(part.node().starts_with("/dev"), !part.dev.starts_with('/'));
    let json = serde_json::to_string(&part).unwrap_or_else(|e| panic!("{e}"));
    let back: Partition = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(back, part);
}

// ---------------------------------------------------------------------------
// fwenv

/// `fwenv::parse` never panics; what it accepts, written back as
/// `device offset size [sectorsize [sectors]]` on the same lines, parses to the same.
pub fn fwenv(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let config = match fwenv::parse(&text) {
        Ok(config) => config,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let entries = config.entries();
    assert!(matches!(
        (&config, entries.len()),
        (FwEnvConfig::Single(_), 1) | (FwEnvConfig::Redundant(..), 2)
    ));
    let mut rendered = String::new();
    let mut line = 0;
    for e in &entries {
        assert!(e.size > 0 && e.size == config.size());
        assert!(e.line > line, "lines out of order");
        let device = e.device.to_string_lossy();
        assert!(
            !device.is_empty() && !device.contains(char::is_whitespace) && !device.contains('#')
        );
        while line + 1 < e.line {
            rendered.push('\n');
            line += 1;
        }
        line += 1;
        rendered.push_str(&format!("{device} {} {:#x}", e.offset, e.size));
        if let Some(s) = e.sector_size {
            rendered.push_str(&format!(" {s:x}"));
        }
        if let Some(n) = e.sectors {
            assert!(e.sector_size.is_some());
            rendered.push_str(&format!(" 0X{n:X}"));
        }
        rendered.push('\n');
    }
    assert_eq!(fwenv::parse(&rendered), Ok(config), "{rendered}");
}

// ---------------------------------------------------------------------------
// bootstate

/// `data` as an env data area (`key=value\0...\0\0`); the boot state read from
/// it under a few slot configs. What reads is written back unchanged, and the
/// transitions keep RAUC's invariants; the slot decision never panics.
pub fn bootstate(data: &[u8]) {
    let Ok(env) = envblock::parse_data(data) else {
        return;
    };
    for config in bootstate_configs() {
        let state = match State::read(&env, &config) {
            Ok(state) => state,
            Err(e) => {
                let _ = e.to_string();
                continue;
            }
        };
        assert!(state.left.keys().eq(sorted(&config.slots).iter()));
        // Unknown and repeated names are kept; an empty order reads as the
        // configured one; the walk has each configured slot at most once.
        assert!(!state.order.is_empty());
        let walk = state.walk(&config);
        for (i, slot) in walk.iter().enumerate() {
            assert!(config.slots.contains(slot) && !walk[..i].contains(slot));
            assert!(state.order.contains(slot));
        }

        // Written back, over the same env or a fresh one, it reads the same;
        // through the codec too.
        let mut written = env.clone();
        check_ok(rauc::apply(&state, &mut written));
        assert_eq!(State::read(&written, &config).as_ref(), Ok(&state));
        let mut fresh = Env::new();
        check_ok(rauc::apply(&state, &mut fresh));
        assert_eq!(State::read(&fresh, &config).as_ref(), Ok(&state));
        let block = envblock::serialize(&written, written.data_len() + 4, Header::Single);
        let reread = block.and_then(|b| envblock::parse_single(&b));
        assert_eq!(reread.as_ref(), Ok(&written));

        check_choice(&state, &config);
        for slot in &config.slots {
            check_marks(&state, slot, &config);
        }
        let unknown = Bootname::new("not-configured").unwrap_or_else(|e| panic!("{e}"));
        if !config.slots.contains(&unknown) {
            assert!(rauc::mark_good(&state, &unknown, 1).is_err());
        }
        if config == rauc::Config::default() {
            check_decide(&state, &config);
        }
    }
}

fn bootstate_configs() -> Vec<rauc::Config> {
    let names = |list: &[&str]| -> Vec<Bootname> {
        list.iter()
            .map(|n| Bootname::new(n).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    };
    [
        (&["A", "B"][..], 3, 3),
        (&["B", "A"][..], 1, 5),
        (&["system0", "system1", "x.y-z"][..], 0, u32::MAX),
        (&["A"][..], u32::MAX, 0),
    ]
    .into_iter()
    .map(|(slots, attempts, primary)| {
        rauc::Config::new(names(slots), attempts, primary).unwrap_or_else(|e| panic!("{e}"))
    })
    .collect()
}

fn check_choice(state: &State, config: &rauc::Config) {
    let choice = rauc::choose_and_decrement(state, config)
        .unwrap_or_else(|e| panic!("no choice from a state that read: {e}"));
    let _ = choice.to_string();
    match &choice.how {
        Chosen::Attempt {
            left_before,
            skipped,
        } => {
            assert!(*left_before > 0);
            assert_eq!(*left_before, state.left(&choice.slot));
            assert_eq!(choice.state.left(&choice.slot), left_before - 1);
            let walk = state.walk(config);
            let position = walk.iter().position(|s| *s == choice.slot);
            let Some(position) = position else {
                panic!("{} not in the order", choice.slot)
            };
            assert_eq!(skipped[..], walk[..position]);
            assert!(skipped.iter().all(|s| state.left(s) == 0));
            assert_eq!(choice.state.order, state.order);
        }
        Chosen::Exhausted { reset_to } => {
            assert_eq!(*reset_to, config.attempts);
            assert!(state.walk(config).iter().all(|s| state.left(s) == 0));
            // The configured order, then the unknown names that were there.
            assert!(choice.state.order.starts_with(&config.slots));
            let rest = &choice.state.order[config.slots.len()..];
            assert!(rest
                .iter()
                .all(|s| !config.slots.contains(s) && state.order.contains(s)));
            assert_eq!(Some(&choice.slot), config.slots.first());
            assert_eq!(
                choice.state.left(&choice.slot),
                config.attempts.saturating_sub(1)
            );
        }
    }
}

fn check_marks(state: &State, slot: &Bootname, config: &rauc::Config) {
    let changed = |m: &rauc::Marked| {
        assert_eq!(m.change == Change::Unchanged, m.state == *state);
    };
    let good = rauc::mark_good(state, slot, config.attempts).unwrap_or_else(|e| panic!("{e}"));
    changed(&good);
    assert_eq!(good.state.left(slot), config.attempts);
    assert_eq!(good.state.order, state.order);

    let bad = rauc::mark_bad(state, slot).unwrap_or_else(|e| panic!("{e}"));
    changed(&bad);
    assert_eq!(bad.state.left(slot), 0);
    assert!(!bad.state.order.contains(slot));
    assert!(!rauc::is_bootable(&bad.state, slot));

    let active =
        rauc::mark_active(state, slot, config.attempts_primary).unwrap_or_else(|e| panic!("{e}"));
    changed(&active);
    assert_eq!(active.state.order.first(), Some(slot));
    let places = state.order.iter().filter(|s| *s == slot).count();
    assert_eq!(active.state.order.len(), state.order.len() - places + 1);
    assert_eq!(
        rauc::is_bootable(&active.state, slot),
        config.attempts_primary > 0
    );
}

/// The A/B decision over this state: never a panic, never a failed slot, and
/// only an error when both failed.
fn check_decide(state: &State, config: &rauc::Config) {
    let names = bootnames();
    let failures: [&[(Slot, String)]; 4] = [
        &[],
        &[(Slot::A, "fuzz".into())],
        &[(Slot::B, "fuzz".into())],
        &[(Slot::A, "fuzz".into()), (Slot::B, "fuzz".into())],
    ];
    for failed in &failures {
        for counter in [Counter::Init, Counter::Bootloader] {
            for override_slot in [None, Some(Slot::B)] {
                let inputs = Inputs {
                    override_slot,
                    default_slot: Slot::A,
                    counter,
                    hint: None,
                    state: Some(state),
                    names: &names,
                    config,
                    failed,
                };
                match slot::decide(&inputs) {
                    Ok(out) => {
                        assert!(failed.len() < 2);
                        assert!(!failed.iter().any(|(s, _)| *s == out.decision.slot));
                    }
                    Err(_) => assert_eq!(failed.len(), 2),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// helpers

fn check_ok<E: std::fmt::Display>(result: Result<(), E>) {
    if let Err(e) = result {
        panic!("{e}");
    }
}

fn sorted(slots: &[Bootname]) -> Vec<Bootname> {
    let mut v = slots.to_vec();
    v.sort();
    v
}

fn bootnames() -> Bootnames {
    let name = |n| Bootname::new(n).unwrap_or_else(|e| panic!("{e}"));
    Bootnames {
        a: name("A"),
        b: name("B"),
    }
}

/// The partitions of tests/fixtures/gpt/rpi.gpt as the kernel would list them.
fn rpi_partitions() -> Vec<Partition> {
    [
        "bootconfig",
        "boot_a",
        "boot_b",
        "system_a",
        "system_b",
        "persistent",
    ]
    .iter()
    .zip(1..)
    .map(|(name, number)| Partition {
        dev: format!("vda{number}"),
        disk: "vda".into(),
        number,
        name: Some((*name).into()),
        uuid: None,
    })
    .collect()
}
