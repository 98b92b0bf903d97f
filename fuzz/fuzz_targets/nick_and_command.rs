//! libFuzzer entry point; the oracle is groupchatd_fuzz::check_nick_and_command.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| groupchatd_fuzz::check_nick_and_command(data));
