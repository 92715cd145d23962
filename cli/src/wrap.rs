//! Lines wrapped at the terminal's width, so that a clinician reading at 80 columns never sees
//! a word, a number or a value and its unit split across lines ("59." then "64 U/L").
//!
//! A line longer than the width breaks only at spaces (never inside a word, a number, a date or
//! a unit such as "U/L"), and a number stays with the unit after it. The lines it breaks into hang: they start under the
//! text of the first, past its indentation and its bullet ("•", "-", "3."). The width is
//! `COLUMNS` if set, else the terminal's; output that goes to a file or a pipe is not wrapped.

use textwrap::{Options, WordSeparator};

/// The width to wrap stdout at, if any: `COLUMNS`, else the terminal's.
pub fn width() -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
    {
        return (columns > 0).then_some(columns);
    }
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Some(textwrap::termwidth());
    }
    None
}

/// The narrowest width wrapped at: below it, hanging indents leave no room for text.
const WIDTH_MIN: usize = 20;

/// `text` with each line longer than `width` wrapped (see the module docs).
pub fn wrap(text: &str, width: usize) -> String {
    let width = width.max(WIDTH_MIN);
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if textwrap::core::display_width(line) <= width {
            out.push_str(line);
            continue;
        }
        let glued = glue_units(line);
        let hang = " ".repeat(hanging_indent(line).min(width / 2));
        let options = Options::new(width)
            .break_words(false)
            .word_separator(WordSeparator::AsciiSpace)
            .subsequent_indent(&hang);
        let wrapped = textwrap::wrap(&glued, options);
        out.push_str(&wrapped.join("\n").replace(NO_BREAK, " "));
    }
    out
}

/// The no-break space that holds a number to its unit while a line is wrapped.
const NO_BREAK: char = '\u{a0}';

/// `line` with each space after a number that a word follows ("64 U/L", "1 dose", "20 mg")
/// made a no-break space (made a space again after wrapping).
fn glue_units(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    for (i, c) in chars.iter().enumerate() {
        let after_number = i > 0 && chars[i - 1].is_ascii_digit();
        let before_word = chars
            .get(i + 1)
            .is_some_and(|n| n.is_alphabetic() || matches!(n, '%' | 'µ' | '°'));
        if *c == ' ' && after_number && before_word {
            out.push(NO_BREAK);
        } else {
            out.push(*c);
        }
    }
    out
}

/// Where the text of `line` starts: past its indentation and a bullet ("• ", "- ", "* ") or a
/// number ("12. "); else its indentation and two more spaces.
fn hanging_indent(line: &str) -> usize {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    for bullet in ["• ", "- ", "* "] {
        if rest.starts_with(bullet) {
            return indent + textwrap::core::display_width(bullet);
        }
    }
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && rest[digits..].starts_with(". ") {
        return indent + digits + 2;
    }
    indent + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_hangs_under_its_text_and_keeps_numbers_with_their_units() {
        let line = "  • Alanine aminotransferase [Enzymatic activity/\u{200b}volume] in Serum or \
                    Plasma: 59.64 U/L on 1996-01-19";
        let wrapped = wrap(line, 80);
        for (i, l) in wrapped.lines().enumerate() {
            assert!(textwrap::core::display_width(l) <= 80, "{l:?}");
            if i > 0 {
                assert!(l.starts_with("    ") && !l.starts_with("     "), "{l:?}");
            }
        }
        let joined = wrapped.replace("\n    ", " ");
        assert!(joined.contains("59.64 U/L"), "{wrapped}");
        for narrow in 20..80 {
            let wrapped = wrap(line, narrow);
            let lines: Vec<&str> = wrapped.lines().map(str::trim).collect();
            assert!(
                lines.iter().any(|l| l.contains("59.64 U/L")),
                "{narrow}: {lines:?}"
            );
            assert!(
                !lines
                    .iter()
                    .any(|l| l.ends_with("59.") || l.starts_with("64"))
            );
        }
    }

    #[test]
    fn short_lines_tables_and_blank_lines_are_left_alone() {
        let text = "Allergies\n  No allergies recorded.\n\n  1. Ada · 1815-12-10\n";
        assert_eq!(wrap(text, 80), text);
        assert_eq!(hanging_indent("  12. Penicillin"), 6);
        assert_eq!(hanging_indent("Active problems are"), 2);
    }
}
