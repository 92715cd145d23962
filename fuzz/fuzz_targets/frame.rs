//! A frame off a libp2p stream: the node's `FrameCodec`, then the sync message inside it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phr_core::sync::Incoming;
use phr_node::codec::{read_frame_from_bytes, write_frame_to_bytes};

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = read_frame_from_bytes(data) else {
        return;
    };
    // Whatever the codec hands over, written as a frame, reads back the same.
    let wire = write_frame_to_bytes(frame.clone());
    assert_eq!(
        read_frame_from_bytes(&wire).expect("a written frame reads"),
        frame
    );
    let _ = Incoming::decode(&frame);
});
