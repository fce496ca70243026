//! Key providers: where the passphrase of a LUKS2 container comes from.
//! One [`KeySpec`] per `[[crypt]]` entry (`key = "file:/etc/slotinit/x.key"`
//! or `key = "rpi-otp"`), one function each behind [`passphrase`].
//!
//! - `file:`: a key file in the initramfs, used whole as `cryptsetup
//!   --key-file` uses it (a trailing newline is part of the key).
//! - `rpi-otp`: rpi-image-gen's `hwkey` keyscript
//!   (scripts/device/cryptroot/hwkey): `block-device-id $CRYPTTAB_SOURCE |`
//!   (through `echo`, so with a newline) `rpi-fw-crypto hmac --key-id 1
//!   --outform hex`: the passphrase is the 64 lowercase hex digits (no
//!   newline: rpifwcrypto's main.c prints the bytes with `%02x` alone) of
//!   HMAC-SHA256(OTP key 1, device id + "\n"), which the firmware computes
//!   without showing the key (mailbox tag 0x00030092, raspberrypi/utils
//!   rpifwcrypto.c). The device id: the eMMC/SD card's CID
//!   (/sys/block/mmcblkN/device/cid) or the NVMe controller's serial
//!   (/sys/block/nvmeXnY/device/serial, blank padding trimmed).
//!   `block-device-id`'s source was not found; what it prints is inferred:
//!   Raspberry Pi's review of pi-gen-micro PR #60 ("block-device-id ... |
//!   rpi-fw-crypto hmac --in /dev/stdin --key-id 1 --outform hex", the id
//!   taken whole, not hex-decoded), and rpi-sb-provisioner issue #316 (an
//!   NVMe key differed until "trimming an input string"). Check it against
//!   a provisioned device before relying on it.
//!   This provider cannot run under QEMU (no VideoCore firmware, no
//!   /dev/vcio): its tests run the whole provider against a fake firmware
//!   and vectors computed with openssl.

use crate::kernel::sys::Sys;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// HMAC-SHA256 with an OTP key (rpifwcrypto `TAG_GET_CRYPTO_HMAC_SHA256`).
const TAG_HMAC_SHA256: u32 = 0x0003_0092;
/// The OTP key rpi-image-gen's keyscript uses (`--key-id 1`).
const OTP_KEY_ID: u32 = 1;
/// rpifwcrypto's `RPI_FW_CRYPTO_HMAC_MSG_MAX_SIZE`.
const HMAC_MSG_MAX: usize = 2048;
/// The firmware's "answered" bit (code, request/response size) and, in a
/// crypto tag's status word, its error bit.
const DONE: u32 = 0x8000_0000;
/// Key files are small; a larger one is a mistake, not a key.
const KEY_FILE_MAX: usize = 8192;

/// Parsed by the config (`[[crypt]] key`), which owns it so that config
/// does not depend on crypt.
pub(crate) use crate::config::KeySpec;

#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {}: missing", path.display())]
    Missing { path: PathBuf },
    #[error("key file {}: empty", path.display())]
    Empty { path: PathBuf },
    #[error("key file {}: larger than {KEY_FILE_MAX} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error(
        "rpi-otp: the boot disk is not known (its eMMC CID or NVMe serial is the key's input)"
    )]
    NoBootDisk,
    #[error("rpi-otp: {disk} is neither an SD/eMMC (mmcblkN) nor an NVMe (nvmeXnY) disk")]
    Disk { disk: String },
    #[error("rpi-otp: no device id in {}: {reason}", path.display())]
    DeviceId { path: PathBuf, reason: String },
    #[error("rpi-otp: firmware mailbox (/dev/vcio): {source}")]
    Mailbox {
        #[source]
        source: std::io::Error,
    },
    #[error(
        "rpi-otp: the firmware did not compute HMAC-SHA256 with OTP key {OTP_KEY_ID}: {reason}"
    )]
    Firmware { reason: String },
}

/// The passphrase `spec` gives. `boot_disk` ("mmcblk0", "nvme0n1") is the
/// disk the container is on, for `rpi-otp`.
pub(crate) fn passphrase<S: Sys + ?Sized>(
    sys: &mut S,
    spec: &KeySpec,
    boot_disk: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    match spec {
        KeySpec::File(path) => key_file(sys, path),
        KeySpec::RpiOtp => rpi_otp(sys, boot_disk.ok_or(KeyError::NoBootDisk)?),
    }
}

fn key_file<S: Sys + ?Sized>(sys: &mut S, path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let data = sys.read_file(path).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    let data = Zeroizing::new(data.ok_or_else(|| KeyError::Missing { path: path.into() })?);
    if data.is_empty() {
        return Err(KeyError::Empty { path: path.into() });
    }
    if data.len() > KEY_FILE_MAX {
        return Err(KeyError::TooLarge { path: path.into() });
    }
    Ok(data)
}

/// The sysfs file whose text `block-device-id` gives for `disk`: the CID of
/// an SD card or eMMC (the MMC core's `cid` attribute), the serial of the
/// NVMe controller holding the namespace. None: not such a disk name.
fn device_id_path(disk: &str) -> Option<PathBuf> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if disk.strip_prefix("mmcblk").is_some_and(digits) {
        return Some(PathBuf::from(format!("/sys/block/{disk}/device/cid")));
    }
    let (ctrl, ns) = disk.strip_prefix("nvme")?.split_once('n')?;
    (digits(ctrl) && digits(ns)).then(|| PathBuf::from(format!("/sys/block/{disk}/device/serial")))
}

/// The id as `block-device-id` prints it: the attribute's text, blank
/// padding (NVMe serials are space-padded to 20 bytes) and newline trimmed.
fn device_id<S: Sys + ?Sized>(sys: &mut S, disk: &str) -> Result<String, KeyError> {
    let path = device_id_path(disk).ok_or_else(|| KeyError::Disk { disk: disk.into() })?;
    let bad = |reason: String| KeyError::DeviceId {
        path: path.clone(),
        reason,
    };
    let data = sys
        .read_file(&path)
        .map_err(|e| bad(e.to_string()))?
        .ok_or_else(|| bad("missing".into()))?;
    let text = String::from_utf8(data).map_err(|_| bad("not text".into()))?;
    let id = text.trim().to_string();
    if id.is_empty() {
        return Err(bad("empty".into()));
    }
    Ok(id)
}

/// The property message asking for HMAC-SHA256 of `message` with OTP key
/// `key_id` (rpifwcrypto.c `struct firmware_hmac_msg`, whose value buffer
/// holds the largest request): size, code, tag, value buffer size,
/// request size 0, then flags, key_id, length, the message bytes (in
/// memory order), and the end tag.
fn hmac_request(key_id: u32, message: &[u8]) -> Vec<u32> {
    let value_bytes = 12 + HMAC_MSG_MAX;
    let words = 5 + value_bytes / 4 + 1;
    let mut buf = vec![0u32; words];
    buf[0] = (words * 4) as u32;
    buf[2] = TAG_HMAC_SHA256;
    buf[3] = value_bytes as u32;
    buf[6] = key_id;
    buf[7] = message.len() as u32;
    for (w, chunk) in buf[8..].iter_mut().zip(message.chunks(4)) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u32::from_ne_bytes(b);
    }
    buf
}

/// The HMAC from the firmware's answer: status 0, length 32, the bytes.
fn hmac_response(buf: &[u32]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let refuse = |reason: String| KeyError::Firmware { reason };
    if buf[1] & DONE == 0 || buf[4] & DONE == 0 {
        return Err(refuse(format!(
            "no answer (code {:#x}, response {:#x})",
            buf[1], buf[4]
        )));
    }
    if buf[5] & DONE != 0 {
        return Err(refuse(format!("status {:#x}", buf[5])));
    }
    if buf[6] != 32 {
        return Err(refuse(format!("{} bytes instead of 32", buf[6])));
    }
    let mut mac = Zeroizing::new([0u8; 32]);
    for (chunk, w) in mac.chunks_mut(4).zip(&buf[7..15]) {
        chunk.copy_from_slice(&w.to_ne_bytes());
    }
    Ok(mac)
}

fn rpi_otp<S: Sys + ?Sized>(sys: &mut S, disk: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut message = Zeroizing::new(device_id(sys, disk)?.into_bytes());
    message.push(b'\n');
    let mut buf = Zeroizing::new(hmac_request(OTP_KEY_ID, &message));
    sys.rpi_mailbox(&mut buf)
        .map_err(|source| KeyError::Mailbox { source })?;
    let mac = hmac_response(&buf)?;
    let mut hex = Zeroizing::new(Vec::with_capacity(64));
    for b in mac.iter() {
        for nibble in [b >> 4, b & 15] {
            hex.push(b"0123456789abcdef"[nibble as usize]);
        }
    }
    Ok(hex)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::Fake;

    #[test]
    fn a_key_file_is_used_whole() {
        let mut sys = Fake::default();
        sys.files
            .insert("/etc/slotinit/osdata.key".into(), b"secret\n".to_vec());
        let spec = KeySpec::File("/etc/slotinit/osdata.key".into());
        let key = passphrase(&mut sys, &spec, None).unwrap();
        assert_eq!(&key[..], b"secret\n");
    }

    #[test]
    fn a_missing_or_empty_key_file_is_named() {
        let mut sys = Fake::default();
        sys.files.insert("/etc/empty.key".into(), Vec::new());
        let e = passphrase(&mut sys, &KeySpec::File("/etc/none.key".into()), None).unwrap_err();
        assert_eq!(e.to_string(), "key file /etc/none.key: missing");
        let e = passphrase(&mut sys, &KeySpec::File("/etc/empty.key".into()), None).unwrap_err();
        assert_eq!(e.to_string(), "key file /etc/empty.key: empty");
        sys.errno.push(("read-file /etc/io.key".into(), libc::EIO));
        let e = passphrase(&mut sys, &KeySpec::File("/etc/io.key".into()), None).unwrap_err();
        assert!(e.to_string().starts_with("key file /etc/io.key: "), "{e}");
    }

    const OTP_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pi(disk_file: &str, id: &[u8]) -> Fake {
        let mut sys = Fake {
            otp_key: Some(unhex(OTP_KEY)),
            ..Fake::default()
        };
        sys.files.insert(disk_file.into(), id.to_vec());
        sys
    }

    // The vectors, from openssl (the input as the keyscript's `echo` gives it):
    //   echo "150100424a54443452001b4a8c3b11c0" | openssl dgst -sha256 -mac HMAC \
    //     -macopt hexkey:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
    //   = e12e0e4f90ea23845d807199b79133ef6250c69f31144175d846b7cc20d05841
    //   echo "S4EWNX0R123456" | openssl dgst -sha256 -mac HMAC -macopt hexkey:<same>
    //   = abdedac6d2baeaeb933a046ee88a1b95c170c4b2efe77edd989be4a2d9fd27a3
    //   echo "150100424a54443452001b4a8c3b11c0" | openssl dgst -sha256 -mac HMAC \
    //     -macopt hexkey:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100
    //   = 88edaa3752399804b2028ddf1976945531caaa6795e50569e8515095cbd7c7ee
    #[test]
    fn rpi_otp_from_an_emmc_cid() {
        let mut sys = pi(
            "/sys/block/mmcblk0/device/cid",
            b"150100424a54443452001b4a8c3b11c0\n",
        );
        let key = passphrase(&mut sys, &KeySpec::RpiOtp, Some("mmcblk0")).unwrap();
        assert_eq!(
            std::str::from_utf8(&key).unwrap(),
            "e12e0e4f90ea23845d807199b79133ef6250c69f31144175d846b7cc20d05841"
        );
        assert_eq!(
            sys.calls,
            vec![
                "read-file /sys/block/mmcblk0/device/cid",
                "rpi-mailbox 0x00030092"
            ]
        );
        // Another device's key gives another passphrase.
        sys.otp_key = Some(unhex(
            "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
        ));
        let key = passphrase(&mut sys, &KeySpec::RpiOtp, Some("mmcblk0")).unwrap();
        assert_eq!(
            std::str::from_utf8(&key).unwrap(),
            "88edaa3752399804b2028ddf1976945531caaa6795e50569e8515095cbd7c7ee"
        );
    }

    #[test]
    fn rpi_otp_from_an_nvme_serial() {
        // The kernel prints the 20-byte, space-padded serial as it is.
        let mut sys = pi(
            "/sys/block/nvme0n1/device/serial",
            b"S4EWNX0R123456      \n",
        );
        let key = passphrase(&mut sys, &KeySpec::RpiOtp, Some("nvme0n1")).unwrap();
        assert_eq!(
            std::str::from_utf8(&key).unwrap(),
            "abdedac6d2baeaeb933a046ee88a1b95c170c4b2efe77edd989be4a2d9fd27a3"
        );
    }

    #[test]
    fn rpi_otp_refusals_are_named() {
        let mut sys = pi("/sys/block/mmcblk0/device/cid", b"1501\n");
        let e = passphrase(&mut sys, &KeySpec::RpiOtp, None).unwrap_err();
        assert!(matches!(e, KeyError::NoBootDisk), "{e}");
        for disk in [
            "sda",
            "mmcblk",
            "mmcblk0p1",
            "nvme0",
            "nvme0n1p3",
            "../../x",
        ] {
            let e = passphrase(&mut sys, &KeySpec::RpiOtp, Some(disk)).unwrap_err();
            assert!(matches!(e, KeyError::Disk { .. }), "{disk}: {e}");
        }
        let e = passphrase(&mut sys, &KeySpec::RpiOtp, Some("mmcblk1")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rpi-otp: no device id in /sys/block/mmcblk1/device/cid: missing"
        );
        // No OTP key provisioned: the firmware answers with its error bit.
        sys.otp_key = None;
        let e = passphrase(&mut sys, &KeySpec::RpiOtp, Some("mmcblk0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "rpi-otp: the firmware did not compute HMAC-SHA256 with OTP key 1: status 0x80000000"
        );
        // No /dev/vcio (QEMU, or a kernel without the vcio driver).
        sys.errno.push(("rpi-mailbox".into(), libc::ENOENT));
        let e = passphrase(&mut sys, &KeySpec::RpiOtp, Some("mmcblk0")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("rpi-otp: firmware mailbox (/dev/vcio): "),
            "{e}"
        );
    }

    #[test]
    fn the_hmac_message_as_rpifwcrypto_lays_it() {
        let buf = hmac_request(1, b"abcde");
        // sizeof(struct firmware_hmac_msg): 20-byte header, flags, key_id,
        // length, 2048 message bytes, end tag.
        assert_eq!(buf.len() * 4, 20 + 12 + 2048 + 4);
        assert_eq!(buf[0] as usize, buf.len() * 4);
        assert_eq!(&buf[1..8], &[0, 0x0003_0092, 12 + 2048, 0, 0, 1, 5]);
        let bytes: Vec<u8> = buf[8..10].iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(&bytes, b"abcde\0\0\0");
        assert_eq!(*buf.last().unwrap(), 0);
    }
}
