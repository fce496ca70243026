//! (to be written: the key providers; a stub for the config's check)

pub(crate) use crate::config::KeySpec;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct KeyError(String);

pub(crate) fn passphrase<S: crate::kernel::sys::Sys + ?Sized>(
    sys: &mut S,
    spec: &KeySpec,
    _boot_disk: Option<&str>,
) -> Result<Vec<u8>, KeyError> {
    match spec {
        KeySpec::File(p) => sys
            .read_file(p)
            .ok()
            .flatten()
            .ok_or_else(|| KeyError(format!("{}: missing", p.display()))),
        KeySpec::RpiOtp => Err(KeyError("stub".into())),
    }
}
