//! (to be written: the key providers; a stub for the config's check)

/// Where a container's passphrase comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySpec {
    File(std::path::PathBuf),
    RpiOtp,
}

impl std::str::FromStr for KeySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("file:") {
            Some(p) if p.starts_with('/') => Ok(KeySpec::File(p.into())),
            _ if s == "rpi-otp" => Ok(KeySpec::RpiOtp),
            _ => Err(format!("{s:?} is neither file:/PATH nor rpi-otp")),
        }
    }
}

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
