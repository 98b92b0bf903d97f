//! libFuzzer entry point; the oracle is groupchatd_fuzz::check_wrap.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| groupchatd_fuzz::check_wrap(data));
