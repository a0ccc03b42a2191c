#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| distkv_fuzz::path_syntax(data));
