//! Listing conversations and tickets with arbitrary filters and client-supplied page tokens.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::page_token(data));
