//! The interaction table: rows that say which two things clash, how much, why, and where that
//! is written. phr ships a small table ([`Table::shipped`], `table.csv` beside this file) and
//! reads a larger one a user supplies ([`Table::parse`]); both have the same columns
//! (docs/FORMAT.md, "Medicines table"):
//!
//! | column     | holds                                                                    |
//! |------------|--------------------------------------------------------------------------|
//! | `a`        | an ingredient or a class; for `drug-allergy`, what the allergy is to      |
//! | `b`        | an ingredient or a class; for `drug-allergy`, the medicine taken          |
//! | `kind`     | `drug-drug` or `drug-allergy`                                             |
//! | `severity` | `high`, `moderate` or `low`                                               |
//! | `why`      | the reason, in words a patient reads                                      |
//! | `source`   | the citation: authors or publisher, title, year                          |
//! | `link`     | where to check it: a URL or a DOI                                         |
//!
//! `*` in both `a` and `b` means "the same ingredient on both sides": an allergy to an
//! ingredient of the medicine, or one ingredient in two current medicines.
//!
//! A row without a source or a link is refused, naming its line: the check never says
//! anything it cannot point to. That is also why [`Source`] can only be made by parsing a row.

use std::{collections::BTreeSet, fmt, str::FromStr, sync::OnceLock};

use serde::{Deserialize, Serialize};

use super::{
    csv,
    vocabulary::{Known, class_named, lookup},
};

/// The largest table a user may import, in bytes.
pub const MEDICINES_TABLE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// The most rows an imported table may have.
pub const MEDICINES_TABLE_ROWS_MAX: usize = 20_000;
/// The longest field of a row, in bytes.
pub const MEDICINES_FIELD_BYTES_MAX: usize = 2048;

/// The columns of a table, in order: the CSV header line.
pub const COLUMNS: [&str; 7] = ["a", "b", "kind", "severity", "why", "source", "link"];

/// The table phr ships, as written.
const SHIPPED: &str = include_str!("table.csv");

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; ask at the next review.
    Low,
    /// Ask a pharmacist or GP soon.
    Moderate,
    /// Ask a pharmacist or GP before the next dose.
    High,
}

impl Severity {
    /// The word in the table and the output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Moderate => "moderate",
            Severity::High => "high",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "low" => Ok(Severity::Low),
            "moderate" => Ok(Severity::Moderate),
            "high" => Ok(Severity::High),
            _ => Err(()),
        }
    }
}

/// What a row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A medicine against something the patient is allergic to.
    #[serde(rename = "drug-allergy")]
    DrugAllergy,
    /// Two current medicines against each other.
    #[serde(rename = "drug-drug")]
    DrugDrug,
}

impl Kind {
    /// The word in the table and the output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::DrugAllergy => "drug-allergy",
            Kind::DrugDrug => "drug-drug",
        }
    }
}

impl FromStr for Kind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "drug-allergy" => Ok(Kind::DrugAllergy),
            "drug-drug" => Ok(Kind::DrugDrug),
            _ => Err(()),
        }
    }
}

/// One side of a row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Term {
    /// `*`: the same ingredient as on the other side.
    Same,
    /// An ingredient: one the vocabulary knows, or a name an imported table adds.
    Ingredient(String),
    /// A class the vocabulary knows.
    Class(&'static str),
}

impl Term {
    /// The term as the table writes it.
    pub fn name(&self) -> &str {
        match self {
            Term::Same => "*",
            Term::Ingredient(name) => name,
            Term::Class(name) => name,
        }
    }

    /// The term in a patient's words.
    pub fn shown(&self) -> &str {
        match self {
            Term::Same => "the same ingredient",
            Term::Ingredient(name) => name,
            Term::Class(name) => class_named(name).map_or(name, |c| c.shown),
        }
    }

    /// How closely the term names one medicine: an ingredient beats a class.
    pub(super) fn specificity(&self) -> u8 {
        match self {
            Term::Same | Term::Ingredient(_) => 2,
            Term::Class(_) => 1,
        }
    }
}

/// Where a row comes from: a citation and the place to check it. Made only by parsing a row,
/// which refuses an empty one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Source {
    citation: String,
    link: String,
}

impl Source {
    /// Authors or publisher, title, year.
    pub fn citation(&self) -> &str {
        &self.citation
    }

    /// A URL or a DOI.
    pub fn link(&self) -> &str {
        &self.link
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.citation, self.link)
    }
}

/// Which table a row is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The table phr ships.
    Shipped,
    /// The table the user imported.
    Imported,
}

/// One row of a table.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Row {
    /// For `drug-allergy`, what the allergy is to; else one of the two medicines.
    pub a: Term,
    /// For `drug-allergy`, the medicine; else the other medicine.
    pub b: Term,
    /// Drug-drug or drug-allergy.
    pub kind: Kind,
    /// How much it matters.
    pub severity: Severity,
    /// Why, in a patient's words.
    pub why: String,
    /// Where it is written.
    pub source: Source,
    /// Which table it is from.
    pub origin: Origin,
    /// The line (CSV) or entry (JSON) of its table it was read from, from 1.
    pub line: usize,
}

/// A table of rows, in the order they were written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    rows: Vec<Row>,
}

/// Why a table cannot be read. Each names the line (or JSON entry) and says what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The table is larger than [`MEDICINES_TABLE_BYTES_MAX`].
    #[error(
        "the table is {bytes} bytes, more than the {max} allowed: split it or keep the rows that matter"
    )]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The bound.
        max: usize,
    },
    /// The table has more rows than [`MEDICINES_TABLE_ROWS_MAX`].
    #[error("the table has more than {max} rows: keep the rows that matter")]
    TooManyRows {
        /// The bound.
        max: usize,
    },
    /// The bytes are not UTF-8 text.
    #[error("the table is not UTF-8 text: save it as UTF-8 CSV or JSON")]
    NotText,
    /// The table holds no row.
    #[error(
        "the table has no rows: a CSV table starts with the header line a,b,kind,severity,why,source,link"
    )]
    Empty,
    /// The first CSV line is not the header.
    #[error("line {line}: expected the header a,b,kind,severity,why,source,link, found '{found}'")]
    Header {
        /// The line.
        line: usize,
        /// What it held.
        found: String,
    },
    /// A JSON table that is not an array of row objects.
    #[error(
        "the JSON table is not an array of rows with the fields a, b, kind, severity, why, source, link: {0}"
    )]
    Json(String),
    /// One row is wrong.
    #[error("{place} {number}: {problem}")]
    Row {
        /// `line` (CSV) or `entry` (JSON).
        place: &'static str,
        /// Its number, from 1.
        number: usize,
        /// What is wrong with it.
        problem: RowProblem,
    },
}

/// What is wrong with one row.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    /// The row has no citation: rows without a source are refused.
    #[error(
        "no source: every row needs a citation (authors or publisher, title, year) in 'source'; rows without a source are refused"
    )]
    NoSource,
    /// The row has no link to check its source at.
    #[error("no link: every row needs a URL or DOI in 'link' where its source can be checked")]
    NoLink,
    /// The row says nothing a patient could read.
    #[error("no reason: 'why' must say, in plain words, what the clash does")]
    NoWhy,
    /// A CSV line with the wrong number of fields.
    #[error(
        "{0} fields, expected 7 (a,b,kind,severity,why,source,link); put a field holding a comma in double quotes"
    )]
    Fields(usize),
    /// A field longer than [`MEDICINES_FIELD_BYTES_MAX`].
    #[error("the '{field}' field is longer than {max} bytes")]
    TooLong {
        /// The column.
        field: &'static str,
        /// The bound.
        max: usize,
    },
    /// A quoted field that never ends.
    #[error("a quoted field is never closed: end it with a double quote")]
    Unterminated,
    /// `kind` is not one of the two kinds.
    #[error("kind '{0}': expected drug-drug or drug-allergy")]
    Kind(String),
    /// `severity` is not one of the three.
    #[error("severity '{0}': expected high, moderate or low")]
    Severity(String),
    /// A name the vocabulary does not know, in a table that must use known names only.
    #[error("'{0}' is not an ingredient or class phr knows")]
    Unknown(String),
    /// A name that is not lowercase letters, digits, spaces and hyphens.
    #[error("name '{0}': use lowercase letters, digits, spaces and hyphens, or * on both sides")]
    BadName(String),
    /// `*` on one side only.
    #[error("'*' (the same ingredient) must be on both sides or neither")]
    LoneSame,
}

/// A row as written, before it is checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    a: String,
    b: String,
    kind: String,
    severity: String,
    why: String,
    source: String,
    link: String,
}

/// Rows as written, each with its line (or entry) number, or what keeps it from being a row.
type WrittenRows = Vec<(usize, Result<Written, RowProblem>)>;

impl Table {
    /// The table phr ships (`core/src/medicines/table.csv`), read once. Its tests check that it
    /// reads, that every row has a source, and that every name is one the vocabulary knows.
    pub fn shipped() -> &'static Table {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(|| {
            Table::parse(SHIPPED.as_bytes(), Origin::Shipped)
                .expect("the shipped medicines table reads (tested)")
        })
    }

    /// Reads a table: JSON if it starts with `[`, else CSV. A shipped table must name only
    /// what the vocabulary knows; an imported one may add ingredient names of its own, which
    /// then match medicines by those words.
    pub fn parse(bytes: &[u8], origin: Origin) -> Result<Table, TableError> {
        if bytes.len() > MEDICINES_TABLE_BYTES_MAX {
            return Err(TableError::TooLarge {
                bytes: bytes.len(),
                max: MEDICINES_TABLE_BYTES_MAX,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| TableError::NotText)?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let (place, written) = if text.trim_start().starts_with('[') {
            ("entry", json_rows(text)?)
        } else {
            ("line", csv_rows(text)?)
        };
        if written.is_empty() {
            return Err(TableError::Empty);
        }
        if written.len() > MEDICINES_TABLE_ROWS_MAX {
            return Err(TableError::TooManyRows {
                max: MEDICINES_TABLE_ROWS_MAX,
            });
        }
        let rows = written
            .into_iter()
            .map(|(number, row)| {
                let row = row.and_then(|w| checked(w, origin, number));
                row.map_err(|problem| TableError::Row {
                    place,
                    number,
                    problem,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Table { rows })
    }

    /// The rows, in the order they were written.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }

    /// The ingredient names the rows use that the vocabulary does not know.
    pub fn extra_names(&self) -> BTreeSet<String> {
        let terms = self.rows.iter().flat_map(|r| [&r.a, &r.b]);
        terms
            .filter_map(|t| match t {
                Term::Ingredient(name) if lookup(name).is_none() => Some(name.clone()),
                _ => None,
            })
            .collect()
    }

    /// The table as CSV, header first: what [`Table::parse`] reads back as the same rows.
    pub fn to_csv(&self) -> String {
        let mut out = csv::record(&COLUMNS);
        for row in &self.rows {
            out += &csv::record(&[
                row.a.name(),
                row.b.name(),
                row.kind.as_str(),
                row.severity.as_str(),
                &row.why,
                row.source.citation(),
                row.source.link(),
            ]);
        }
        out
    }
}

fn csv_rows(text: &str) -> Result<WrittenRows, TableError> {
    let lines = csv::records(text).map_err(|e| TableError::Row {
        place: "line",
        number: e.line,
        problem: RowProblem::Unterminated,
    })?;
    let mut lines = lines.into_iter();
    let Some(header) = lines.next() else {
        return Err(TableError::Empty);
    };
    let names: Vec<&str> = header.fields.iter().map(|f| f.trim()).collect();
    if names != COLUMNS {
        return Err(TableError::Header {
            line: header.number,
            found: header.fields.join(","),
        });
    }
    Ok(lines
        .map(|line| {
            let written = match <[String; 7]>::try_from(line.fields) {
                Ok([a, b, kind, severity, why, source, link]) => Ok(Written {
                    a,
                    b,
                    kind,
                    severity,
                    why,
                    source,
                    link,
                }),
                Err(fields) => Err(RowProblem::Fields(fields.len())),
            };
            (line.number, written)
        })
        .collect())
}

fn json_rows(text: &str) -> Result<WrittenRows, TableError> {
    let rows: Vec<Written> =
        serde_json::from_str(text).map_err(|e| TableError::Json(e.to_string()))?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, row)| (i + 1, Ok(row)))
        .collect())
}

/// Checks one written row and makes it a [`Row`].
fn checked(w: Written, origin: Origin, line: usize) -> Result<Row, RowProblem> {
    let fields = [
        ("a", &w.a),
        ("b", &w.b),
        ("kind", &w.kind),
        ("severity", &w.severity),
        ("why", &w.why),
        ("source", &w.source),
        ("link", &w.link),
    ];
    if let Some((field, _)) = fields
        .iter()
        .find(|(_, value)| value.len() > MEDICINES_FIELD_BYTES_MAX)
    {
        return Err(RowProblem::TooLong {
            field,
            max: MEDICINES_FIELD_BYTES_MAX,
        });
    }
    let (why, citation, link) = (w.why.trim(), w.source.trim(), w.link.trim());
    if citation.is_empty() {
        return Err(RowProblem::NoSource);
    }
    if link.is_empty() {
        return Err(RowProblem::NoLink);
    }
    if why.is_empty() {
        return Err(RowProblem::NoWhy);
    }
    let kind = w.kind.trim();
    let kind = kind.parse().map_err(|()| RowProblem::Kind(kind.into()))?;
    let severity = w.severity.trim();
    let severity = severity
        .parse()
        .map_err(|()| RowProblem::Severity(severity.into()))?;
    let (a, b) = (term(&w.a, origin)?, term(&w.b, origin)?);
    if (a == Term::Same) != (b == Term::Same) {
        return Err(RowProblem::LoneSame);
    }
    Ok(Row {
        a,
        b,
        kind,
        severity,
        why: why.to_string(),
        source: Source {
            citation: citation.to_string(),
            link: link.to_string(),
        },
        origin,
        line,
    })
}

/// A name as a term: `*`, a known class or ingredient, or (imported tables only) a new
/// ingredient name.
fn term(name: &str, origin: Origin) -> Result<Term, RowProblem> {
    let name = name.trim().to_lowercase();
    if name == "*" {
        return Ok(Term::Same);
    }
    match lookup(&name) {
        Some(Known::Class(class)) => return Ok(Term::Class(class)),
        Some(Known::Ingredient(ingredient)) => return Ok(Term::Ingredient(ingredient.into())),
        None => {}
    }
    let plain = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == ' ' || c == '-');
    if name.is_empty() || !plain || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(RowProblem::BadName(name));
    }
    match origin {
        Origin::Shipped => Err(RowProblem::Unknown(name)),
        Origin::Imported => Ok(Term::Ingredient(name)),
    }
}
