//! (stub until the verity branch merges)
use crate::kernel::sys::DmLine;
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct VerityError(String);
pub(crate) struct Superblock;
pub(crate) fn parse_superblock(_b: &[u8], what: &str) -> Result<Superblock, VerityError> {
    Err(VerityError(what.into()))
}
pub(crate) fn fs_size(_b: &[u8], what: &str) -> Result<u64, VerityError> {
    Err(VerityError(what.into()))
}
pub(crate) enum OnCorruption {
    Restart,
    Eio,
}
pub(crate) struct Params<'a> {
    pub(crate) data_dev: &'a str,
    pub(crate) hash_dev: &'a str,
    pub(crate) superblock_offset: u64,
    pub(crate) root_hash: &'a str,
    pub(crate) on_corruption: OnCorruption,
}
pub(crate) fn table(_sb: &Superblock, p: &Params) -> Result<Vec<DmLine>, VerityError> {
    let _ = (p.data_dev, p.hash_dev, p.superblock_offset, p.root_hash);
    match p.on_corruption {
        OnCorruption::Restart | OnCorruption::Eio => Err(VerityError("stub".into())),
    }
}
pub(crate) fn parse_root_hash(text: &str, what: &str) -> Result<String, VerityError> {
    Err(VerityError(format!("{what}: {text}")))
}
