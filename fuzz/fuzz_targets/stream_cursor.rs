//! StreamEvents starts (after_sequence, at_time...) and filters, and client id and time parsers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_fuzz::stream_cursor(data));
