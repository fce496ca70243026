//! Encrypted and verified block devices: LUKS2 containers (rpi-image-gen's
//! `crypt`, `cryptslots` and `cryptdata` provisioning maps), the partitions
//! inside them, and dm-verity system slots. The parsers and table builders
//! here are pure; the init's stages set the targets up through `Sys`.

pub(crate) mod keys;
pub(crate) mod kpartx;
pub(crate) mod luks2;
pub(crate) mod verity;
