//! Arm FWU metadata, versions 1 and 2, as bytes: parse and validate one
//! copy, the transitions slotinit makes (accept, activate, reject, steer,
//! follow the firmware), and the bytes written back. No I/O.
//!
//! The layout (little-endian, packed), from U-Boot `include/fwu_mdata.h`,
//! TF-A `include/drivers/fwu/fwu_metadata.h` and Arm DEN0118 (A.2/A.3):
//!
//! ```text
//! v1                                v2
//! 0  u32 crc32                      0  u32 crc32
//! 4  u32 version (1)                4  u32 version (2)
//! 8  u32 active_index               8  u32 active_index
//! 12 u32 previous_active_index      12 u32 previous_active_index
//! 16 image entries (platform's      16 u32 metadata_size
//!    count, no descriptor)          20 u16 desc_offset (0x20, or 0: none)
//!                                   22 u16 reserved1
//!                                   24 u8  bank_state[4] (FF/FE/FC)
//!                                   28 u32 reserved2
//!                                   32 descriptor: u8 num_banks, u8 reserved,
//!                                      u16 num_images, u16 img_entry_size,
//!                                      u16 bank_info_entry_size
//!                                   40 image entries
//! image entry: 16 image_type_guid, 16 location_guid, then per bank
//! bank info (24): 16 image_guid, u32 accepted (bit 0), u32 reserved
//! ```
//!
//! The CRC-32 (zlib's, `crc32fast`) covers bytes 4..size: U-Boot
//! `lib/fwu_updates/fwu.c` `mdata_crc_check`, TF-A `drivers/fwu/fwu.c`
//! `fwu_metadata_crc_check` (v2: `metadata_size`; v1 before TF-A commit
//! a89d58bb2: `sizeof(struct fwu_metadata)`, the platform's geometry).
//!
//! What a copy must be to be used, as TF-A's `fwu_metadata_sanity_check`
//! and U-Boot's `fwu_get_mdata_mandatory` / `fwu_mdata_sanity_checks`
//! (`lib/fwu_updates/fwu_v2.c`) read it: the version, the indexes below the
//! number of banks, a v2 `metadata_size` of at least the header, a
//! descriptor at 0x20 with entry sizes that match its bank count, and the
//! CRC. Two places where slotinit is more lenient than a firmware built
//! for one geometry: a v2 descriptor describes itself (TF-A also wants
//! `num_banks` = its `NR_OF_FW_BANKS` and `metadata_size` at most its
//! struct), and bytes after the image entries (mkfwumdata's `--vendor-file`
//! data, `tools/fwumdata_src/mkfwumdata.c`) are kept as they are.

/// The largest copy slotinit reads (and the most it reads of a partition):
/// a v2 copy with 4 banks and 500 images is under 64 KiB.
pub const CAP: usize = 0x10000;
/// The v1 header: crc32, version, active_index, previous_active_index.
pub const HEADER_V1: usize = 16;
/// The v2 header (up to reserved2); also where v2's descriptor starts.
pub const HEADER_V2: usize = 32;
/// The v2 descriptor's own fields before its image entries.
pub const DESC_HEAD: usize = 8;
/// An image entry's two GUIDs, before its bank infos.
pub const IMAGE_HEAD: usize = 32;
/// `struct fwu_image_bank_info`.
pub const BANK_INFO: usize = 24;
/// DEN0118 and TF-A's `NR_OF_MAX_FW_BANKS`: `bank_state` has four bytes.
pub const MAX_BANKS: usize = 4;

/// `bank_state` values (U-Boot `include/fwu.h` `enum fwu_bank_states`).
pub const STATE_INVALID: u8 = 0xFF;
pub const STATE_VALID: u8 = 0xFE;
pub const STATE_ACCEPTED: u8 = 0xFC;

/// The `accepted` field's bit (U-Boot `include/fwu.h` FWU_IMAGE_ACCEPTED;
/// TF-A's header: bit 0, bits 31:1 MBZ).
const ACCEPTED_BIT: u32 = 1;

/// The platform's geometry, which a v1 copy does not carry (v1 has no
/// descriptor): images per bank and banks. A v2 copy without a descriptor
/// takes its bank count from here too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub images: usize,
    pub banks: usize,
}

impl Geometry {
    /// A v1 copy's size: 16 + images × (32 + banks × 24).
    pub fn v1_size(&self) -> usize {
        self.images
            .saturating_mul(IMAGE_HEAD.saturating_add(self.banks.saturating_mul(BANK_INFO)))
            .saturating_add(HEADER_V1)
    }
}

/// Why a copy is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MdataError {
    #[error("{len} bytes: shorter than {need}, the {what}")]
    Short {
        len: usize,
        need: usize,
        what: &'static str,
    },
    #[error("version {0}: slotinit reads versions 1 and 2")]
    Version(u32),
    #[error("metadata_size {size}: {why}")]
    Size { size: u32, why: String },
    #[error("crc32 {stored:#010x}, but bytes 4..{size} give {computed:#010x}")]
    Crc {
        stored: u32,
        computed: u32,
        size: usize,
    },
    #[error("desc_offset {0:#x}: 0x20 (a descriptor) or 0 (none)")]
    DescOffset(u16),
    #[error("num_banks {0}: 2 to 4 (one bank per slot, at most 4 in DEN0118)")]
    Banks(u8),
    #[error("num_images {0}: at least 1")]
    Images(u16),
    #[error("bank_info_entry_size {0}: 24")]
    BankInfoSize(u16),
    #[error("img_entry_size {got}: {want} (32 + 24 per bank)")]
    EntrySize { got: u16, want: usize },
    #[error("{field} {index}: the metadata has {banks} banks")]
    Index {
        field: &'static str,
        index: u32,
        banks: usize,
    },
}

/// One bank's state as the firmware reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BankState {
    /// Not bootable (v2 0xFF, or a value that is neither valid nor
    /// accepted: TF-A `plat/st/common/bl2_io_storage.c` boots the alternate).
    Invalid,
    /// Bootable, not accepted: a trial.
    Valid,
    /// Bootable and accepted (v2: 0xFC and every image's accepted bit).
    Accepted,
}

/// A parsed, valid copy: its bytes (exactly `size` of them) and where its
/// fields are. Transitions change the bytes and the CRC; nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mdata {
    bytes: Vec<u8>,
    version: u32,
    banks: usize,
    images: usize,
    /// Offset of the first image entry.
    entries: usize,
    entry_size: usize,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    if let Some(s) = b.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// The CRC a copy of these bytes must store.
pub fn crc_of(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes.get(4..).unwrap_or(&[]))
}

/// Parses the copy at the start of `buf` (a partition's first bytes, at
/// most [`CAP`]); `geometry` is the platform's, for v1.
pub fn parse(buf: &[u8], geometry: Geometry) -> Result<Mdata, MdataError> {
    if buf.len() < 8 {
        return Err(MdataError::Short {
            len: buf.len(),
            need: 8,
            what: "crc32 and version",
        });
    }
    let version = u32_at(buf, 4);
    let (size, banks, images, entries, entry_size) = match version {
        1 => {
            let size = geometry.v1_size();
            if buf.len() < size {
                return Err(MdataError::Short {
                    len: buf.len(),
                    need: size,
                    what: "v1 size of the configured images and banks",
                });
            }
            let entry = IMAGE_HEAD + geometry.banks * BANK_INFO;
            (size, geometry.banks, geometry.images, HEADER_V1, entry)
        }
        2 => v2_layout(buf, geometry)?,
        v => return Err(MdataError::Version(v)),
    };
    let bytes = &buf[..size];
    let stored = u32_at(bytes, 0);
    let computed = crc_of(bytes);
    if stored != computed {
        return Err(MdataError::Crc {
            stored,
            computed,
            size,
        });
    }
    for (field, at) in [("active_index", 8), ("previous_active_index", 12)] {
        let index = u32_at(bytes, at);
        if index as usize >= banks {
            return Err(MdataError::Index {
                field,
                index,
                banks,
            });
        }
    }
    Ok(Mdata {
        bytes: bytes.to_vec(),
        version,
        banks,
        images,
        entries,
        entry_size,
    })
}

/// A v2 copy's size, banks, images, first entry and entry size.
fn v2_layout(
    buf: &[u8],
    geometry: Geometry,
) -> Result<(usize, usize, usize, usize, usize), MdataError> {
    if buf.len() < HEADER_V2 {
        return Err(MdataError::Short {
            len: buf.len(),
            need: HEADER_V2,
            what: "v2 header",
        });
    }
    let raw_size = u32_at(buf, 16);
    let size = raw_size as usize;
    let bad = |why: String| MdataError::Size {
        size: raw_size,
        why,
    };
    if size < HEADER_V2 {
        return Err(bad(format!("smaller than the {HEADER_V2}-byte header")));
    }
    if size > CAP {
        return Err(bad(format!("larger than slotinit's cap of {CAP} bytes")));
    }
    if size > buf.len() {
        // `buf` is the partition, or its first CAP bytes.
        return Err(bad(format!(
            "larger than the partition ({} bytes)",
            buf.len()
        )));
    }
    match u16_at(buf, 20) {
        0 => Ok((size, geometry.banks, 0, HEADER_V2, 0)),
        0x20 => {
            if size < HEADER_V2 + DESC_HEAD {
                return Err(bad("too small for the descriptor at 0x20".into()));
            }
            let d = HEADER_V2;
            let num_banks = buf[d];
            if !(2..=MAX_BANKS).contains(&(num_banks as usize)) {
                return Err(MdataError::Banks(num_banks));
            }
            let banks = num_banks as usize;
            let num_images = u16_at(buf, d + 2);
            if num_images == 0 {
                return Err(MdataError::Images(num_images));
            }
            let entry = u16_at(buf, d + 4);
            let info = u16_at(buf, d + 6);
            if info as usize != BANK_INFO {
                return Err(MdataError::BankInfoSize(info));
            }
            let want = IMAGE_HEAD + banks * BANK_INFO;
            if entry as usize != want {
                return Err(MdataError::EntrySize { got: entry, want });
            }
            let end = HEADER_V2 + DESC_HEAD + num_images as usize * want;
            if end > size {
                return Err(bad(format!(
                    "smaller than the {end} bytes of its {num_images} image entries"
                )));
            }
            Ok((size, banks, num_images as usize, d + DESC_HEAD, want))
        }
        other => Err(MdataError::DescOffset(other)),
    }
}

impl Mdata {
    /// The bytes to write: what was parsed, with the transitions applied
    /// and the CRC made right.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn banks(&self) -> usize {
        self.banks
    }

    pub fn images(&self) -> usize {
        self.images
    }

    pub fn active(&self) -> usize {
        u32_at(&self.bytes, 8) as usize
    }

    pub fn previous(&self) -> usize {
        u32_at(&self.bytes, 12) as usize
    }

    /// v2's raw `bank_state[bank]`; None for v1 or a bank past the four.
    pub fn raw_state(&self, bank: usize) -> Option<u8> {
        (self.version == 2 && bank < MAX_BANKS).then(|| self.bytes[24 + bank])
    }

    fn accepted_at(&self, image: usize, bank: usize) -> usize {
        self.entries + image * self.entry_size + IMAGE_HEAD + bank * BANK_INFO + 16
    }

    /// Image `image`'s accepted bit in `bank`.
    pub fn accepted(&self, image: usize, bank: usize) -> bool {
        u32_at(&self.bytes, self.accepted_at(image, bank)) & ACCEPTED_BIT != 0
    }

    fn all_accepted(&self, bank: usize) -> bool {
        (0..self.images).all(|i| self.accepted(i, bank))
    }

    /// The bank's state: v2 by `bank_state` and the images' bits (trial =
    /// not 0xFC, or an image not accepted); v1 by the images' bits alone
    /// (TF-A before a89d58bb2, `fwu_is_trial_run_state`).
    pub fn state(&self, bank: usize) -> BankState {
        if bank >= self.banks {
            return BankState::Invalid;
        }
        match self.raw_state(bank) {
            None if self.all_accepted(bank) => BankState::Accepted,
            None => BankState::Valid,
            Some(STATE_ACCEPTED) if self.all_accepted(bank) => BankState::Accepted,
            Some(STATE_ACCEPTED | STATE_VALID) => BankState::Valid,
            Some(_) => BankState::Invalid,
        }
    }

    fn set_state(&mut self, bank: usize, state: u8) {
        if self.version == 2 && bank < MAX_BANKS {
            self.bytes[24 + bank] = state;
        }
    }

    fn set_accepted(&mut self, bank: usize, on: bool) {
        for image in 0..self.images {
            let at = self.accepted_at(image, bank);
            let v = u32_at(&self.bytes, at);
            let v = if on {
                v | ACCEPTED_BIT
            } else {
                v & !ACCEPTED_BIT
            };
            put_u32(&mut self.bytes, at, v);
        }
    }

    /// previous_active_index = active_index, active_index = `bank` (U-Boot
    /// `fwu_set_active_index`); nothing when it is already active.
    fn set_active(&mut self, bank: usize) {
        if self.active() != bank {
            let active = self.active() as u32;
            put_u32(&mut self.bytes, 12, active);
            put_u32(&mut self.bytes, 8, bank as u32);
        }
    }

    fn seal(&mut self) {
        let crc = crc_of(&self.bytes);
        put_u32(&mut self.bytes, 0, crc);
    }

    /// Applies `change`; whether any byte changed.
    fn change(&mut self, change: impl FnOnce(&mut Self)) -> bool {
        let before = self.bytes.clone();
        change(self);
        self.seal();
        self.bytes != before
    }

    fn check_bank(&self, bank: usize) -> Result<(), MdataError> {
        if bank < self.banks {
            Ok(())
        } else {
            Err(MdataError::Index {
                field: "bank",
                index: bank as u32,
                banks: self.banks,
            })
        }
    }

    /// mark-good: `bank` accepted (v2 bank_state 0xFC) with every image's
    /// accepted bit (DEN0118's "accept"; U-Boot `fwu_state_machine_updates`
    /// with FWU_BANK_ACCEPTED). Whether anything changed.
    pub fn accept(&mut self, bank: usize) -> Result<bool, MdataError> {
        self.check_bank(bank)?;
        Ok(self.change(|m| {
            m.set_state(bank, STATE_ACCEPTED);
            m.set_accepted(bank, true);
        }))
    }

    /// mark-active: `bank` becomes the active bank on trial: the indexes
    /// move, v2 bank_state 0xFE (valid), its images' accepted bits clear
    /// (what an update agent does after writing a bank, DEN0118 "staging").
    pub fn activate(&mut self, bank: usize) -> Result<bool, MdataError> {
        self.check_bank(bank)?;
        Ok(self.change(|m| {
            m.set_active(bank);
            m.set_state(bank, STATE_VALID);
            m.set_accepted(bank, false);
        }))
    }

    /// mark-bad: `bank` invalid (v2 0xFF; v1, which has no state, its
    /// accepted bits clear); when it is active, the indexes are swapped
    /// back (U-Boot `fwu_revert_boot_index`, DEN0118's rejection), or when
    /// previous_active_index is the bank itself, the first other bank.
    pub fn reject(&mut self, bank: usize) -> Result<bool, MdataError> {
        self.check_bank(bank)?;
        Ok(self.change(|m| {
            m.set_state(bank, STATE_INVALID);
            m.set_accepted(bank, false);
            if m.active() == bank {
                let back = if m.previous() != bank {
                    m.previous()
                } else {
                    usize::from(bank == 0)
                };
                put_u32(&mut m.bytes, 8, back as u32);
                put_u32(&mut m.bytes, 12, bank as u32);
            }
        }))
    }

    /// boot_next: the firmware picks `bank` at the next reset: it becomes
    /// active; valid (0xFE) unless it is accepted, which it stays.
    pub fn steer(&mut self, bank: usize) -> Result<bool, MdataError> {
        self.check_bank(bank)?;
        let accepted = self.state(bank) == BankState::Accepted;
        Ok(self.change(|m| {
            m.set_active(bank);
            if !accepted {
                m.set_state(bank, STATE_VALID);
            }
        }))
    }

    /// The firmware booted `booted`, not the active bank (its trial ran
    /// out): what U-Boot's `fwu_boottime_checks` (`lib/fwu_updates/fwu.c`)
    /// writes: the active bank invalid, then `booted` active.
    pub fn follow_boot(&mut self, booted: usize) -> Result<bool, MdataError> {
        self.check_bank(booted)?;
        Ok(self.change(|m| {
            let active = m.active();
            if active != booted {
                m.set_state(active, STATE_INVALID);
                m.set_active(booted);
            }
        }))
    }
}
