//! A sealed blob from a peer, the disk or a backup: `Blob::decode`, the one decoder of them all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phr_core::blob::Blob;

fuzz_target!(|data: &[u8]| {
    if let Ok(blob) = Blob::decode(data.to_vec()) {
        // A blob is its bytes: what decoded is what is stored and sent on.
        assert_eq!(blob.bytes(), data);
        assert_eq!(blob.len(), data.len());
    }
});
