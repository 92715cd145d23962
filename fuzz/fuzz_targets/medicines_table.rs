//! A medicines table a user imports (`phr medicines import FILE`): CSV or JSON, read by
//! `Table::parse`. A table that reads is written back as CSV, which must read as the same rows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phr_core::medicines::{Origin, Row, Table};

fuzz_target!(|data: &[u8]| {
    let Ok(table) = Table::parse(data, Origin::Imported) else {
        return;
    };
    let again = Table::parse(table.to_csv().as_bytes(), Origin::Imported)
        .expect("a table phr wrote reads back");
    let unnumbered = |t: &Table| -> Vec<Row> {
        t.rows()
            .iter()
            .map(|r| Row {
                line: 0,
                ..r.clone()
            })
            .collect()
    };
    assert_eq!(unnumbered(&again), unnumbered(&table));
});
