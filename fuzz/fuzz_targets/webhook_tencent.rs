//! The tencent plugin's verify, parse, raw_for_storage and reply on arbitrary requests.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::webhook("tencent", data));
