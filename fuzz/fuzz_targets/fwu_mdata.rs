//! Fuzz target: the properties of `slotinit_fuzz::fwu::fwu_mdata` over arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotinit_fuzz::fwu::fwu_mdata(data));
