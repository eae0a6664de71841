//! gzip-compressed bodies: decompression stops at the limit (gzip bombs), whatever the bytes.
#![no_main]

const LIMIT: usize = 64 * 1024;

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    if let Ok(plain) = kepler_collector::decode::gunzip(body, LIMIT) {
        assert!(
            plain.len() <= LIMIT,
            "{} bytes out of a {LIMIT}-byte limit",
            plain.len()
        );
        let _ = kepler_collector::decode::protobuf(&plain);
    }
});
