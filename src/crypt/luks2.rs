//! (stub until the luks branch merges)
use crate::kernel::sys::{Disk, DmLine};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Luks2Error(String);

pub(crate) struct Container;
pub(crate) struct Limits {
    pub(crate) max_memory_kib: u64,
}
pub(crate) struct Unlocked;

pub(crate) fn read_header(_dev: &mut dyn Disk, what: &str) -> Result<Container, Luks2Error> {
    Err(Luks2Error(format!("{what}: stub")))
}
pub(crate) fn unlock(
    _c: &Container,
    _dev: &mut dyn Disk,
    _passphrase: &[u8],
    limits: &Limits,
) -> Result<Unlocked, Luks2Error> {
    Err(Luks2Error(format!("stub {}", limits.max_memory_kib)))
}
pub(crate) fn crypt_table(
    _u: &Unlocked,
    device: &str,
    bytes: u64,
) -> Result<Vec<DmLine>, Luks2Error> {
    Err(Luks2Error(format!("stub {device} {bytes}")))
}

/// The label of a LUKS2 binary header (`head`: its first 512 bytes), if it is one.
pub(crate) fn peek_label(head: &[u8]) -> Option<String> {
    if head.get(..6)? != b"LUKS\xba\xbe" || head.get(6..8)? != [0, 2] {
        return None;
    }
    let label = head.get(24..72)?;
    let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
    std::str::from_utf8(&label[..end]).ok().map(str::to_string)
}

impl Drop for Unlocked {
    fn drop(&mut self) {}
}
