//! The U-Boot environment with RAUC's contract (BOOT_ORDER, BOOT_x_LEFT): the
//! env format, where its copies live, and the store that reads and writes it.

pub mod envblock;
pub mod envstore;
pub mod fwenv;
pub mod rauc;
pub mod store;
