//! OTLP/JSON request bodies, as the HTTP receiver decodes them.
#![no_main]

mod common;

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    if let Ok(request) = kepler_collector::decode::json(body) {
        common::ingest_and_render(&request);
    }
});
