//! A contact card someone pasted: `Card::parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phr_core::card::Card;

fuzz_target!(|data: &[u8]| {
    // The CLI reads a card as text; bytes that are not UTF-8 never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Card::parse(text);
});
