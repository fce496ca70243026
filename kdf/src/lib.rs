//! PBKDF2-HMAC and argon2 for LUKS2 keyslots and digests, as plain functions.
//!
//! RustCrypto's `pbkdf2_hmac` is generic over its hash, so its loop is compiled
//! in the crate that names the hash, at that crate's optimization level.
//! slotinit is built for size (`opt-level = "z"`), which makes that loop about
//! twice as slow: a keyslot of cryptsetup's default cost would open seconds
//! later at boot. Naming the hashes here, in a crate the release profile builds
//! at `opt-level = 3`, keeps the loop fast and the rest of slotinit small.

/// PBKDF2 with HMAC-SHA1 (LUKS2 `"hash": "sha1"`).
pub fn pbkdf2_hmac_sha1(password: &[u8], salt: &[u8], rounds: u32, out: &mut [u8]) {
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, rounds, out);
}

/// PBKDF2 with HMAC-SHA256 (LUKS2 `"hash": "sha256"`, cryptsetup's default).
pub fn pbkdf2_hmac_sha256(password: &[u8], salt: &[u8], rounds: u32, out: &mut [u8]) {
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, rounds, out);
}

/// PBKDF2 with HMAC-SHA512 (LUKS2 `"hash": "sha512"`).
pub fn pbkdf2_hmac_sha512(password: &[u8], salt: &[u8], rounds: u32, out: &mut [u8]) {
    pbkdf2::pbkdf2_hmac::<sha2::Sha512>(password, salt, rounds, out);
}

/// Why [`argon2`] derived nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Argon2Error {
    /// The parameters are out of argon2's range.
    Params(String),
    /// The memory it needs cannot be had.
    Memory,
    /// The hash refused its inputs.
    Hash(String),
}

/// Argon2i or Argon2id (version 0x13, as LUKS2 keyslots use it) of `password`
/// and `salt` into `out`. The memory is reserved fallibly (the caller is PID 1,
/// which must not abort on an allocation the RAM cannot give) and wiped after.
pub fn argon2(
    id: bool,
    memory_kib: u32,
    time: u32,
    lanes: u32,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), Argon2Error> {
    let params = argon2::Params::new(memory_kib, time, lanes, Some(out.len()))
        .map_err(|e| Argon2Error::Params(e.to_string()))?;
    let alg = if id {
        argon2::Algorithm::Argon2id
    } else {
        argon2::Algorithm::Argon2i
    };
    let blocks = params.block_count();
    let mut memory: Vec<argon2::Block> = Vec::new();
    memory
        .try_reserve_exact(blocks)
        .map_err(|_| Argon2Error::Memory)?;
    memory.resize(blocks, argon2::Block::default());
    let hashed = argon2::Argon2::new(alg, argon2::Version::V0x13, params)
        .hash_password_into_with_memory(password, salt, out, &mut memory)
        .map_err(|e| Argon2Error::Hash(e.to_string()));
    for block in &mut memory {
        zeroize::Zeroize::zeroize(block);
    }
    hashed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// RFC 6070's PBKDF2-HMAC-SHA1 vector (2 rounds) and the SHA-256 and
    /// SHA-512 vectors of the same input (`openssl kdf -kdfopt
    /// digest:SHA256 -kdfopt pass:password -kdfopt salt:salt -kdfopt iter:2
    /// PBKDF2`).
    #[test]
    fn known_vectors() {
        let mut out = [0u8; 20];
        pbkdf2_hmac_sha1(b"password", b"salt", 2, &mut out);
        assert_eq!(hex(&out), "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
        let mut out = [0u8; 32];
        pbkdf2_hmac_sha256(b"password", b"salt", 2, &mut out);
        assert_eq!(
            hex(&out),
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"
        );
        let mut out = [0u8; 64];
        pbkdf2_hmac_sha512(b"password", b"salt", 2, &mut out);
        assert_eq!(
            hex(&out),
            "e1d9c16aa681708a45f5c7c4e215ceb66e011a2e9f0040713f18aefdb866d53c\
             f76cab2868a39b9f7840edce4fef5a82be67335c77a6068e04112754f27ccf4e"
        );
    }

    /// RFC 9106's Argon2id test vector needs a secret and associated data this
    /// interface does not take; this one is the reference C libargon2's
    /// (through argon2-cffi: `hash_secret_raw(b"password", b"somesalt",
    /// time_cost=2, memory_cost=64, parallelism=1, hash_len=32,
    /// type=Type.ID, version=19)`). Too little memory is refused.
    #[test]
    fn argon2_vectors_and_errors() {
        let mut out = [0u8; 32];
        argon2(true, 64, 2, 1, b"password", b"somesalt", &mut out).unwrap();
        assert_eq!(
            hex(&out),
            "16a1a498734609dd01456da406de9f3d9da93e6c86c300a12fc1465214ce4922"
        );
        let mut out = [0u8; 32];
        assert!(matches!(
            argon2(true, 1, 2, 1, b"password", b"somesalt", &mut out),
            Err(Argon2Error::Params(_))
        ));
    }
}
