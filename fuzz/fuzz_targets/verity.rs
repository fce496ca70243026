//! Fuzz target: the properties of `slotinit_fuzz::crypt::verity` over arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| slotinit_fuzz::crypt::verity(data));
