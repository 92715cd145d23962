//! Text from others, made safe to put on a terminal.
//!
//! Much of what phr shows was written by someone else: a FHIR file's `code.text`, a provider's
//! entry, a grantee's audit entry, a party's name in the ledger. A terminal obeys control
//! characters in what it prints: `ESC [ 2 K` erases a line, `ESC ] 0 ;` sets the window title,
//! `ESC [ 8 m` hides text, a carriage return overwrites; and bidirectional overrides make text
//! display in another order than it has ("Penicillin" shown where the bytes say otherwise). So
//! every human-readable line the CLI prints goes through [`visible`], which shows each such
//! character instead of obeying it: C0 controls as their Unicode control pictures (`␛` for
//! ESC), DEL as `␡`, C1 controls and the bidirectional controls as `<U+XXXX>`. A newline stays
//! a newline. Names that others choose for themselves (cards, the ledger's parties) may not hold
//! these characters at all ([`is_clean_name`]).

use std::borrow::Cow;

/// Whether a terminal would obey `c` rather than print it, or it would reorder the text around
/// it: C0 controls (but the newline), DEL, C1 controls, and the bidirectional marks, embeddings,
/// overrides and isolates.
pub fn is_deceptive(c: char) -> bool {
    (c.is_control() && c != '\n') || is_bidi_control(c)
}

/// The bidirectional formatting characters: marks (LRM, RLM, ALM), embeddings and overrides
/// (LRE, RLE, PDF, LRO, RLO), and isolates (LRI, RLI, FSI, PDI).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

/// `text` with every character a terminal would obey shown instead (see the module docs);
/// borrowed when there is none.
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_deceptive) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !is_deceptive(c) => out.push(c),
            '\u{0}'..='\u{1f}' => {
                out.push(char::from_u32(0x2400 + c as u32).expect("a control picture"))
            }
            '\u{7f}' => out.push('\u{2421}'),
            c => out.push_str(&format!("<U+{:04X}>", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// Whether a name someone chose for itself can be shown as it is: no control character at all
/// (not even a newline: a name is one line) and no bidirectional control.
pub fn is_clean_name(name: &str) -> bool {
    !name.chars().any(|c| c.is_control() || is_bidi_control(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_carriage_returns_and_overrides_are_shown_not_obeyed() {
        let hostile =
            "\u{1b}[2K\r\u{1b}]0;owned\u{7}\u{1b}[8mPENICILLIN\u{9b}31m \u{202e}cba\u{7f}";
        let shown = visible(hostile);
        assert_eq!(
            shown,
            "␛[2K␍␛]0;owned␇␛[8mPENICILLIN<U+009B>31m <U+202E>cba␡"
        );
        assert!(!shown.chars().any(is_deceptive));
    }

    #[test]
    fn ordinary_text_and_newlines_pass_unchanged_and_unallocated() {
        let text = "Penicillin – anaphylaxis\nBlood pressure 148/95 mmHg, 64 U/L, Zoë, 日本";
        assert!(matches!(visible(text), Cow::Borrowed(t) if t == text));
        assert!(is_clean_name("Riverside Surgery (Zoë)"));
        assert!(!is_clean_name("Riverside\nSurgery"));
        assert!(!is_clean_name("Riverside \u{2067}Surgery"));
        assert!(!is_clean_name("\u{1b}[2KRiverside"));
    }
}
