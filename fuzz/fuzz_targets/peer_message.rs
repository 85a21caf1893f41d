#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| meridian_replica::fuzzing::peer_message(data));
