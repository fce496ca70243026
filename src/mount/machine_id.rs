//! machine-id: what a valid one looks like and how a new one is made from random
//! bytes (the format of machine-id(5): 32 lowercase hex digits and a newline).

/// The id in `bytes`, lowercased, if it names a machine; None for garbage.
///
/// systemd reads /etc/machine-id with `id128_read_fd(fd, ID128_FORMAT_PLAIN |
/// ID128_REFUSE_NULL)` (src/libsystemd/sd-id128/id128-util.c): 32 hex digits of
/// either case (`sd_id128_from_string` uses `unhexchar`), one optional newline,
/// not all zeros. The UUID form with dashes it refuses for the machine-id, and so
/// does this. Trailing whitespace (a CRLF from an editor) is taken here although
/// systemd refuses it: the 128 bits are the device's identity, and refusing them
/// would give the device a new one.
pub(crate) fn parse(bytes: &[u8]) -> Option<String> {
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    let id = &bytes[..end];
    let valid =
        id.len() == 32 && id.iter().all(u8::is_ascii_hexdigit) && id.iter().any(|b| *b != b'0');
    valid.then(|| String::from_utf8_lossy(id).to_ascii_lowercase())
}

/// The file's bytes for `id`, as machine-id(5) writes it.
pub(super) fn file_bytes(id: &str) -> Vec<u8> {
    format!("{id}\n").into_bytes()
}

/// A new id from 16 random bytes, marked as a version 4 UUID as systemd does.
pub(super) fn from_random(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn valid_and_invalid_ids() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"0123456789abcdef0123456789abcdef\n", Some(GOOD)),
            (b"0123456789abcdef0123456789abcdef", Some(GOOD)),
            // What systemd also takes: uppercase.
            (b"0123456789ABCDEF0123456789ABCDEF\n", Some(GOOD)),
            (b"0123456789AbCdEf0123456789abcdef", Some(GOOD)),
            // What systemd refuses but names the same machine: trailing blanks.
            (b"0123456789abcdef0123456789abcdef\r\n", Some(GOOD)),
            (b"0123456789ABCDEF0123456789ABCDEF\r\n", Some(GOOD)),
            (b"0123456789abcdef0123456789abcdef\n\n", Some(GOOD)),
            (b"0123456789abcdef0123456789abcdef \t\n", Some(GOOD)),
            (b"", None),
            (b"\n", None),
            (b"\r\n", None),
            (b"uninitialized\n", None),
            (b"00000000000000000000000000000000\n", None),
            (b"0123456789abcdef0123456789abcde\n", None),
            (b"0123456789abcdef0123456789abcdef0\n", None),
            (b" 0123456789abcdef0123456789abcdef\n", None),
            (b"0123456789abcdef\x000123456789abcde\n", None),
            (b"0123456789abcdef\r0123456789abcdef\n", None),
            // The UUID form: systemd reads the machine-id as ID128_FORMAT_PLAIN.
            (b"01234567-89ab-cdef-0123-456789abcdef\n", None),
            (b"0123456789abcdeg0123456789abcdef\n", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                parse(bytes).as_deref(),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn generated_ids_are_valid_v4() {
        for seed in [[0u8; 16], [0xff; 16], [0x5a; 16]] {
            let id = from_random(seed);
            assert_eq!(parse(id.as_bytes()), Some(id.clone()));
            assert_eq!(file_bytes(&id), format!("{id}\n").into_bytes());
            assert_eq!(&id[12..13], "4");
            assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"), "{id}");
        }
    }
}
