#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| certgate_gateway::fuzz::oauth(data));
