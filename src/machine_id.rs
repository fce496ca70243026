//! machine-id: what a valid one looks like and how a new one is made from random
//! bytes (the format of machine-id(5): 32 lowercase hex digits and a newline).

/// The id in `bytes` if it is a valid machine-id: 32 lowercase hex digits, an
/// optional trailing newline, and not all zeros. Anything else is garbage.
pub fn parse(bytes: &[u8]) -> Option<String> {
    let id = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let valid = id.len() == 32
        && id.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && id.iter().any(|b| *b != b'0');
    valid.then(|| String::from_utf8_lossy(id).into_owned())
}

/// A new id from 16 random bytes, marked as a version 4 UUID as systemd does.
pub fn from_random(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_ids() {
        let good = "0123456789abcdef0123456789abcdef";
        let cases: &[(&[u8], bool)] = &[
            (b"0123456789abcdef0123456789abcdef\n", true),
            (b"0123456789abcdef0123456789abcdef", true),
            (b"", false),
            (b"\n", false),
            (b"uninitialized\n", false),
            (b"00000000000000000000000000000000\n", false),
            (b"0123456789ABCDEF0123456789ABCDEF\n", false),
            (b"0123456789abcdef0123456789abcde\n", false),
            (b"0123456789abcdef0123456789abcdef0\n", false),
            (b"0123456789abcdef0123456789abcdef\n\n", false),
            (b"0123456789abcdef\x000123456789abcde\n", false),
        ];
        for (bytes, ok) in cases {
            assert_eq!(
                parse(bytes).is_some(),
                *ok,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            parse(b"0123456789abcdef0123456789abcdef\n").as_deref(),
            Some(good)
        );
    }

    #[test]
    fn generated_ids_are_valid_v4() {
        for seed in [[0u8; 16], [0xff; 16], [0x5a; 16]] {
            let id = from_random(seed);
            assert_eq!(parse(id.as_bytes()), Some(id.clone()));
            assert_eq!(&id[12..13], "4");
            assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"), "{id}");
        }
    }
}
