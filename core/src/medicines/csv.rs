//! The comma-separated values the medicines table is written in (RFC 4180): fields separated by
//! commas, a field in double quotes when it holds a comma, a quote or a line break, a quote
//! inside one doubled. Lines that are empty or start with `#` are comments. Line breaks are LF
//! or CRLF.

/// One record and the line it starts on (from 1).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) number: usize,
    pub(super) fields: Vec<String>,
}

/// A record whose quoted field never ends.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unterminated {
    /// The line the record starts on.
    pub(super) line: usize,
}

/// Splits `text` into records, skipping blank lines and `#` comments.
pub(super) fn records(text: &str) -> Result<Vec<Line>, Unterminated> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while chars.peek().is_some() {
        let start = line;
        // A comment or a blank line, at the start of a record only.
        if matches!(chars.peek(), Some('#' | '\n' | '\r')) {
            for c in chars.by_ref() {
                if c == '\n' {
                    break;
                }
            }
            line += 1;
            continue;
        }
        let mut fields = vec![String::new()];
        let mut quoted = false;
        loop {
            let Some(c) = chars.next() else {
                if quoted {
                    return Err(Unterminated { line: start });
                }
                break;
            };
            let field = fields.last_mut().expect("a record has a field");
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                (true, '"') => quoted = false,
                (true, c) => {
                    line += usize::from(c == '\n');
                    field.push(c);
                }
                (false, '"') if field.is_empty() => quoted = true,
                (false, ',') => fields.push(String::new()),
                (false, '\r') if chars.peek() == Some(&'\n') => {}
                (false, '\n') => {
                    line += 1;
                    break;
                }
                (false, c) => field.push(c),
            }
        }
        out.push(Line {
            number: start,
            fields,
        });
    }
    Ok(out)
}

/// One record: fields quoted where they need it, ending in a line break.
pub(super) fn record(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields
        .iter()
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) || f.starts_with('#') {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.to_string()
            }
        })
        .collect();
    quoted.join(",") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_hold_commas_quotes_and_line_breaks() {
        let text = "a,b\n# a comment\n\n\"x, y\",\"say \"\"hi\"\"\"\r\n\"two\nlines\",z\nlast,row";
        let got = records(text).unwrap();
        let fields: Vec<(usize, Vec<&str>)> = got
            .iter()
            .map(|l| (l.number, l.fields.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            fields,
            [
                (1, vec!["a", "b"]),
                (4, vec!["x, y", "say \"hi\""]),
                (5, vec!["two\nlines", "z"]),
                (7, vec!["last", "row"]),
            ]
        );
    }

    #[test]
    fn an_unterminated_quote_names_the_line_it_starts_on() {
        assert_eq!(
            records("a,b\nc,\"open\nstill open"),
            Err(Unterminated { line: 2 })
        );
    }

    #[test]
    fn what_record_writes_records_reads_back() {
        let fields = [
            "plain",
            "with, comma",
            "with \"quote\"",
            "two\nlines",
            "#hash",
        ];
        let text = record(&fields);
        let back = records(&text).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].fields, fields);
    }
}
