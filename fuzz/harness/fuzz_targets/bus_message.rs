#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| distkv_fuzz::bus_message(data));
