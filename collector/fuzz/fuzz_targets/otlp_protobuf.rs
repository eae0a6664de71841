//! OTLP/protobuf request bodies through the receivers' entry point (`Hub::ingest_protobuf`:
//! read in place when the body has the common shape, prost otherwise), checked against the
//! plain prost decode + ingest: both must agree on accepting the body, on the outcome and on
//! the exposition. Then the common checks (limits, well-formed exposition).
#![no_main]

mod common;

use kepler_collector::decode;
use kepler_collector::exposition::render;

libfuzzer_sys::fuzz_target!(|body: &[u8]| {
    let in_place = common::hub();
    let reference = common::hub();
    let labeling = common::SPOKE;
    let fast = in_place.ingest_protobuf(body, labeling);
    let slow = decode::protobuf(body).map(|request| reference.ingest(&request, labeling));
    match (fast, slow) {
        (Ok(fast), Ok(slow)) => {
            assert_eq!(fast, slow, "in-place and prost outcomes differ");
            assert_eq!(render(&in_place), render(&reference), "expositions differ");
        }
        (Err(_), Err(_)) => return,
        (fast, slow) => panic!("in-place path {fast:?} but prost {slow:?}"),
    }
    if let Ok(request) = decode::protobuf(body) {
        common::ingest_and_render(&request);
    }
});
