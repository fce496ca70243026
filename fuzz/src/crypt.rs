//! The `luks2` and `verity` targets' properties: what a compromised system
//! may write where the init reads it (a container's LUKS2 header and
//! keyslots; the dm-verity superblock after a filesystem; the GPT inside a
//! container) never panics a parser, never allocates what the limit forbids,
//! and what is accepted is consistent.
//!
//! Shared with `tests/fuzz_regressions.rs` (included with `#[path]`), so it
//! depends on slotinit alone, as `checks.rs` does.

use slotinit::crypt::bytes;

/// The passphrases the fixtures' keyslots take (tests/fixtures/luks2/README.md).
const PASSPHRASES: [&[u8]; 2] = [b"correct horse battery staple", b"second passphrase\n"];

/// An argon2 keyslot may take at most this much (KiB) under the fuzzer:
/// the fixtures' 8 MiB ones are refused, their pbkdf2 ones are tried.
const MEMORY_KIB: u64 = 1024;

/// A LUKS2 image from arbitrary bytes: the header parse never panics; a
/// header that parses names a copy; the unlock with each passphrase never
/// panics, and a table it gives is one crypt line.
pub fn luks2(data: &[u8]) {
    let header = bytes::luks2_header(data);
    if let Ok(summary) = &header {
        assert!(
            summary.ends_with("Primary") || summary.ends_with("Secondary"),
            "{summary}"
        );
    }
    for pass in PASSPHRASES {
        match bytes::luks2_unlock(data, pass, MEMORY_KIB) {
            Ok(table) => {
                assert!(header.is_ok(), "unlocked what does not parse");
                assert!(
                    table.starts_with("0 ") && table.ends_with(" crypt") && !table.contains(';'),
                    "{table}"
                );
            }
            Err(e) => assert!(!e.is_empty()),
        }
    }
}

/// A verity superblock, a filesystem head and a GPT inside a container from
/// arbitrary bytes: the first byte picks the superblock offset (in 512-byte
/// units); nothing panics; an accepted table keeps the tree after the
/// superblock and names the root hash it was given.
pub fn verity(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let offset = u64::from(first) * 512;
    let root = "4b5f67f56a657fcaff6b8b402caf1cd8ec9ad8fd99b3dc55cfecd76e391fa369";
    if let Ok((tree_end, params)) = bytes::verity_table(rest, offset, root) {
        assert!(
            tree_end > offset,
            "tree ends at {tree_end}, before {offset}"
        );
        assert!(params.contains(root), "{params}");
    }
    if let Ok(size) = bytes::fs_size(rest) {
        assert!(size > 0 && size % 4096 == 0, "{size}");
    }
    for lba in [512, 4096] {
        if let Ok(parts) = bytes::kpartx(rest, lba) {
            for (name, line) in parts {
                assert!(name.starts_with("fuzzp"), "{name}");
                assert!(line.starts_with("/dev/fuzz "), "{line}");
            }
        }
    }
}
