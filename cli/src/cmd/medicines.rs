//! `phr medicines`: the medicines check (current medicines against each other and against
//! allergies), and the table it checks against. `phr add medication` and `phr add allergy` run
//! the same check and show what the new entry brought (`report_added`).
//!
//! The check informs and never blocks: it exits 0 whatever it finds, and every report ends
//! with the same advice ([`ASK`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use phr_core::{
    Record, Section,
    audit::Logged,
    home::{Home, PatientRecord},
    medicines::{self, ASK, CHECKED_SECTIONS, Check, Finding, Item, Kind, Origin, Row, Table},
};
use serde_json::{Value, json};

use crate::{
    cmd::patients,
    context::{Context, now, print_out, say, tell},
    exit::UserError,
};

/// How many of the names an imported table adds `phr medicines import` lists (`--json` lists all).
const NAMES_SHOWN_MAX: usize = 12;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check your current medicines against each other and against your allergies
    #[command(after_help = "Examples:
  phr medicines check
  phr medicines check --json
  phr --patient 3f2a9c1b7d4e medicines check      # on a provider's node, within the grant
The check never blocks anything: it says what to ask your pharmacist or GP about.")]
    Check,
    /// Import a larger interaction table (CSV or JSON, in the format of docs/FORMAT.md)
    #[command(after_help = "Examples:
  phr medicines import interactions.csv
  phr medicines import --remove
Every row needs a source (a citation and a link); a row without one is refused, naming its line,
and nothing is imported. The table replaces the one imported before.")]
    Import(ImportArgs),
    /// The rows the check uses, each with its source
    Table,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The table: CSV with the header a,b,kind,severity,why,source,link, or a JSON array of rows
    #[arg(required_unless_present = "remove", conflicts_with = "remove")]
    file: Option<PathBuf>,
    /// Forget the imported table; the check uses phr's own table alone
    #[arg(long)]
    remove: bool,
}

/// Whether `--patient` applies: only the check reads a patient's record.
pub fn honours_patient(command: &Command) -> bool {
    matches!(command, Command::Check)
}

pub fn run(ctx: &Context, command: Command) -> Result<()> {
    match command {
        Command::Check => check(ctx),
        Command::Import(args) => import(ctx, args),
        Command::Table => table(ctx),
    }
}

fn check(ctx: &Context) -> Result<()> {
    let Some(query) = &ctx.patient else {
        let (home, record) = ctx.open_record()?;
        let tables = tables(&home)?;
        let found = run_check(&record, &CHECKED_SECTIONS, &tables)?;
        return report(ctx, &found, &tables, None);
    };
    let home = ctx.open_home()?;
    let tables = tables(&home)?;
    let mut patient = patients::open(&home, query)?;
    let record_id = patient.id().to_string();
    let (record, sections) = read_for_check(&mut patient)?;
    let found = run_check(record, &sections, &tables)?;
    report(ctx, &found, &tables, Some(&record_id))
}

/// The shipped table, and the imported one if there is one.
pub fn tables(home: &Home) -> Result<Vec<Table>> {
    let mut tables = vec![Table::shipped().clone()];
    tables.extend(home.imported_medicines_table()?);
    Ok(tables)
}

fn run_check(record: &Record, sections: &[Section], tables: &[Table]) -> Result<Check> {
    let tables: Vec<&Table> = tables.iter().collect();
    Ok(medicines::check(record, sections, &tables)?)
}

/// Reads a patient's record for the check, logged to the patient like any read: the summary,
/// and sensitive and requests where this node may read them.
pub fn read_for_check<'p>(
    patient: &'p mut PatientRecord<'_>,
) -> Result<(&'p Record, Vec<Section>)> {
    let readable = patient.readable(now());
    let sections: Vec<Section> = CHECKED_SECTIONS
        .into_iter()
        .filter(|s| *s == Section::Summary || readable.contains(s))
        .collect();
    let record = patient.read(&Logged::read("medicines check", &sections), now())?;
    Ok((record, sections))
}

fn report(ctx: &Context, found: &Check, tables: &[Table], record: Option<&str>) -> Result<()> {
    let rows = |origin| {
        let all = tables.iter().flat_map(Table::rows);
        all.filter(|r| r.origin == origin).count()
    };
    let unrecognised = |items: &[Item]| -> Vec<String> {
        let names = items.iter().filter(|i| i.unrecognised());
        names.map(|i| i.shown.clone()).collect()
    };
    if ctx.json {
        let mut out = json!({
            "findings": found.findings.iter().map(finding_json).collect::<Vec<_>>(),
            "medicines": found.medicines,
            "allergies": found.allergies,
            "not_recognised": {
                "medicines": unrecognised(&found.medicines),
                "allergies": unrecognised(&found.allergies),
            },
            "rows": {"shipped": rows(Origin::Shipped), "imported": rows(Origin::Imported)},
            "advice": ASK,
        });
        if let Some(record) = record {
            out["record"] = json!(record);
        }
        return ctx.print_json(&out);
    }
    let mut out = format!(
        "Medicines check: {} and {}, against {} rows of phr's table{}.\n",
        count(
            found.medicines.len(),
            "current medicine",
            "current medicines"
        ),
        count(found.allergies.len(), "allergy", "allergies"),
        rows(Origin::Shipped),
        match rows(Origin::Imported) {
            0 => String::new(),
            n => format!(" and {n} of the table you imported"),
        }
    );
    if found.findings.is_empty() {
        out += "\nNothing found to ask about. The table is small: no finding is no guarantee \
                (`phr medicines table` lists what it knows).\n";
    } else {
        out += "\n";
        out += &findings_text(found.findings.iter());
    }
    let medicines = unrecognised(&found.medicines);
    if !medicines.is_empty() {
        out += &format!(
            "\nNot recognised, so not checked: {}.\n",
            medicines.join("; ")
        );
    }
    let allergies = unrecognised(&found.allergies);
    if !allergies.is_empty() {
        out += &format!(
            "Allergies to nothing the check knows as a medicine (a food, for instance): {}.\n",
            allergies.join("; ")
        );
    }
    out += &format!("\n{ASK}\n");
    print_out(&out)
}

/// Each finding as a numbered paragraph: severity, the two items, why, and the source.
fn findings_text<'a>(findings: impl Iterator<Item = &'a Finding>) -> String {
    let mut out = String::new();
    for (n, f) in findings.enumerate() {
        let severity = f.severity().as_str();
        let mut severity = severity.to_string();
        severity[..1].make_ascii_uppercase();
        let first = match f.kind() {
            Kind::DrugAllergy => format!("your allergy to {}", item_text(&f.a, &f.matched[0])),
            Kind::DrugDrug => item_text(&f.a, &f.matched[0]),
        };
        let joined = match f.kind() {
            Kind::DrugAllergy => "and",
            Kind::DrugDrug => "with",
        };
        out += &format!(
            "{}. {severity}: {first} {joined} {}\n   {}\n   Source: {} {}{}\n",
            n + 1,
            item_text(&f.b, &f.matched[1]),
            f.why(),
            f.source().citation(),
            f.source().link(),
            match f.row.origin {
                Origin::Shipped => "",
                Origin::Imported => " (from the table you imported)",
            }
        );
    }
    out
}

/// `Lasix 40mg (loop diuretics; prescribed by Dr Okafor)`.
fn item_text(item: &Item, matched: &str) -> String {
    let mut notes = Vec::new();
    if !item.shown.to_lowercase().contains(&matched.to_lowercase()) {
        notes.push(matched.to_string());
    }
    if let Some(by) = &item.by {
        notes.push(format!("by {by}"));
    }
    match notes.is_empty() {
        true => item.shown.clone(),
        false => format!("{} ({})", item.shown, notes.join("; ")),
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// A finding as JSON: severity, kind, the two items, why, and the row's source.
pub fn finding_json(finding: &Finding) -> Value {
    let side = |item: &Item, matched: &str| {
        let mut value = json!(item);
        value["matched"] = json!(matched);
        value
    };
    json!({
        "severity": finding.severity(),
        "kind": finding.kind(),
        "a": side(&finding.a, &finding.matched[0]),
        "b": side(&finding.b, &finding.matched[1]),
        "why": finding.why(),
        "source": source_json(&finding.row),
    })
}

fn source_json(row: &Row) -> Value {
    json!({
        "citation": row.source.citation(),
        "link": row.source.link(),
        "table": row.origin,
        "line": row.line,
    })
}

/// After `phr add medication` or `phr add allergy`: the check's findings that involve the new
/// entry (`key`, `Type/id`), printed, and as the JSON of the add's `medicines_check` field. A
/// check that cannot run is said, and never undoes or refuses the add.
pub fn report_added(ctx: &Context, checked: Result<Check>, key: &str) -> Value {
    let found = match checked {
        Ok(checked) => checked,
        Err(error) => {
            if !ctx.json {
                tell(&format!(
                    "note: the medicines check did not run: {error:#}. The entry was added."
                ));
            }
            return json!({"not_run": format!("{error:#}")});
        }
    };
    let new: Vec<&Finding> = found.involving(key).collect();
    if !ctx.json && !new.is_empty() {
        say(&format!(
            "\nMedicines check: {} with this entry:\n\n{}\n\n{ASK} (`phr medicines check` \
             shows everything it checked.)",
            count(new.len(), "thing to ask about", "things to ask about"),
            findings_text(new.iter().copied()).trim_end()
        ));
    }
    json!({
        "findings": new.iter().map(|f| finding_json(f)).collect::<Vec<_>>(),
        "advice": ASK,
    })
}

/// The check of one's own record, for `phr add`.
pub fn check_own(home: &Home, record: &Record) -> Result<Check> {
    run_check(record, &CHECKED_SECTIONS, &tables(home)?)
}

/// The check of a patient's record on a provider's node, for `phr --patient ... add`: a read
/// of the record, logged to the patient as any read is.
pub fn check_patient(home: &Home, patient: &mut PatientRecord<'_>) -> Result<Check> {
    let tables = tables(home)?;
    let (record, sections) = read_for_check(patient)?;
    run_check(record, &sections, &tables)
}

fn import(ctx: &Context, args: ImportArgs) -> Result<()> {
    let home = ctx.open_home()?;
    let Some(file) = args.file else {
        let removed = home.remove_medicines_table()?;
        if ctx.json {
            return ctx.print_json(&json!({"removed": removed}));
        }
        return print_out(match removed {
            true => "Removed the imported medicines table: the check uses phr's own table alone.\n",
            false => "No medicines table was imported; the check uses phr's own table.\n",
        });
    };
    let bytes = std::fs::read(&file).map_err(|e| {
        UserError(format!(
            "cannot read {}: {e}; give the path of a CSV or JSON table",
            file.display()
        ))
    })?;
    let table = home.import_medicines_table(&bytes).map_err(|e| match e {
        phr_core::home::ImportTableError::Table(e) => UserError(format!(
            "{}: {e}. Nothing was imported; docs/FORMAT.md (\"Medicines table\") describes the \
             format",
            file.display()
        ))
        .into(),
        phr_core::home::ImportTableError::Home(e) => anyhow::Error::from(e),
    })?;
    let extra = table.extra_names();
    if ctx.json {
        return ctx.print_json(&json!({
            "imported": table.rows().len(),
            "new_names": extra,
        }));
    }
    let rows = table.rows().len();
    let mut out = format!(
        "Imported {} from {}: `phr medicines check` uses {} beside phr's own {}.\n",
        count(rows, "row", "rows"),
        file.display(),
        if rows == 1 { "it" } else { "them" },
        Table::shipped().rows().len()
    );
    if !extra.is_empty() {
        let shown: Vec<String> = extra.iter().take(NAMES_SHOWN_MAX).cloned().collect();
        let more = match extra.len().saturating_sub(NAMES_SHOWN_MAX) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        out += &format!(
            "{} phr's vocabulary does not know, matched in medicines by those words alone: \
             {}{more}.\n",
            count(extra.len(), "name", "names"),
            shown.join(", ")
        );
    }
    print_out(&out)
}

fn table(ctx: &Context) -> Result<()> {
    let home = ctx.open_home()?;
    let tables = tables(&home)?;
    let rows: Vec<&Row> = tables.iter().flat_map(Table::rows).collect();
    if ctx.json {
        let items: Vec<Value> = rows
            .iter()
            .map(|r| {
                json!({
                    "a": r.a.name(),
                    "b": r.b.name(),
                    "kind": r.kind,
                    "severity": r.severity,
                    "why": r.why,
                    "source": source_json(r),
                })
            })
            .collect();
        return ctx.print_json(&items);
    }
    let mut out = String::new();
    for row in rows {
        let (a, b) = (row.a.shown(), row.b.shown());
        let pair = match row.kind {
            Kind::DrugAllergy if row.a == medicines::Term::Same => {
                "an allergy to a medicine's own ingredient".to_string()
            }
            Kind::DrugDrug if row.a == medicines::Term::Same => {
                "one ingredient in two medicines".to_string()
            }
            Kind::DrugAllergy => format!("an allergy to {a}, and {b}"),
            Kind::DrugDrug => format!("{a} with {b}"),
        };
        out += &format!(
            "{} · {pair}{}\n   {}\n   Source: {} {}\n",
            row.severity,
            match row.origin {
                Origin::Shipped => "",
                Origin::Imported => " (imported)",
            },
            row.why,
            row.source.citation(),
            row.source.link()
        );
    }
    print_out(&out)
}
