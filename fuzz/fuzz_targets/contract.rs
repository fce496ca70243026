//! Fuzz target: the properties of `slotinit_fuzz::contract::contract` over arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotinit_fuzz::contract::contract(data));
