//! The network benchmark's table: each figure beside its baseline, and the targets.

use super::*;

pub(crate) struct Report<'a> {
    pub(crate) fixture: &'a Path,
    pub(crate) patient: &'a Patient,
    pub(crate) runs: &'a [SyncRun],
    pub(crate) counted: &'a SyncRun,
    pub(crate) automerge: &'a [AutomergeSync],
    pub(crate) copy: Duration,
    pub(crate) visible: &'a Visible,
}

pub(crate) fn print_report(r: &Report<'_>) {
    let dial = median(r.runs.iter().map(|s| s.dial_to_synced).collect());
    let alone = median(r.runs.iter().map(|s| s.synced_alone).collect());
    let readable = median(
        r.runs
            .iter()
            .map(|s| s.dial_to_synced + s.gp_open)
            .collect(),
    );
    let am = median(r.automerge.iter().map(|a| a.wall).collect());
    let am_bytes = r.automerge[0].bytes;
    let bytes = median(r.runs.iter().map(SyncRun::bytes).collect());
    let round_trips = median(r.runs.iter().map(|s| s.stats.round_trips).collect());
    let to_visible = median(r.visible.to_visible.clone());
    let visible_max = max(&r.visible.to_visible);
    let add = median(r.visible.add_process.clone());
    let add_max = max(&r.visible.add_process);
    let wire = r.counted.wire_bytes.unwrap_or_default();

    let name = r.fixture.file_name().unwrap_or_default().to_string_lossy();
    let size = std::fs::metadata(r.fixture).map_or(0, |m| m.len());
    println!(
        "## Network: {name} ({:.1} MB, {} resources), patient node -> GP node, 127.0.0.1 TCP\n",
        size as f64 / 1e6,
        r.patient.resources
    );
    let first = &r.runs[0];
    let docs = r
        .patient
        .docs
        .iter()
        .map(|(s, d)| format!("{s} {} bytes", d.len()));
    let gp_blobs = first.gp_blobs.iter().map(|(s, n)| format!("{s} {n}"));
    println!(
        "Granted: summary + clinical (Automerge save(): {}). Per phr run: {} items sent (ledger \
         operations and sealed blobs); the GP then reads both sections as the patient holds them \
         (same Automerge heads; blobs: {}) and holds no other; sync message bytes {:?}.\n",
        docs.collect::<Vec<_>>().join(", "),
        first.stats.items_sent,
        gp_blobs.collect::<Vec<_>>().join(", "),
        r.runs.iter().map(SyncRun::bytes).collect::<Vec<_>>(),
    );

    let n = format!("(median of {SYNC_RUNS})");
    let am_name = format!("Automerge in-memory sync, summary + clinical {n}");
    let secs = |d: Duration| d.as_secs_f64();
    let timed = |figure: String, phr: Duration, baseline: &str, base: Duration| {
        let r = ratio(secs(phr), secs(base));
        [figure, ms(phr), baseline.into(), ms(base), r]
    };
    let counted = |figure: String, phr: usize, baseline: &str, base: usize| {
        let r = ratio(phr as f64, base as f64);
        [
            figure,
            phr.to_string(),
            baseline.into(),
            base.to_string(),
            r,
        ]
    };
    let am_round_trips = r.automerge[0].messages.div_ceil(2);
    let copy_name = format!("plain copy of {bytes} bytes over loopback TCP {n}");
    let (add_median, add_max_name) = (
        format!("(median of {ADD_RUNS})"),
        format!("(max of {ADD_RUNS})"),
    );
    let rows = [
        [
            "figure",
            "phr",
            "baseline (same run)",
            "baseline",
            "phr / baseline",
        ]
        .map(String::from),
        timed(format!("full sync, dial -> synced {n}"), dial, &am_name, am),
        timed(
            format!("full sync, connected -> synced {n}"),
            alone,
            &am_name,
            am,
        ),
        timed(
            format!("full sync, then the GP opens the record {n}"),
            readable,
            &am_name,
            am,
        ),
        timed(
            format!("full sync, dial -> synced {n}"),
            dial,
            &copy_name,
            r.copy,
        ),
        counted(
            format!("sync message bytes, both ways {n}"),
            bytes,
            "Automerge sync message bytes, both ways",
            am_bytes,
        ),
        counted(
            format!("TCP payload bytes, both ways, dial -> synced + {WIRE_SETTLE_MS} ms (1 run)"),
            wire as usize,
            "phr sync message bytes of that run",
            r.counted.bytes(),
        ),
        counted(
            format!("round trips {n}"),
            round_trips,
            "Automerge round trips (messages / 2, rounded up)",
            am_round_trips,
        ),
        timed(
            format!("add -> visible at the GP {add_median}"),
            to_visible,
            &format!("`phr add` process alone {add_median}"),
            add,
        ),
        timed(
            format!("add -> visible at the GP {add_max_name}"),
            visible_max,
            &format!("`phr add` process alone {add_max_name}"),
            add_max,
        ),
    ];
    print_table(&rows);

    let verdict = |d: Duration| {
        let x = secs(d) / secs(am);
        format!("{x:.2}x ({})", met(x <= SYNC_RATIO_MAX))
    };
    println!(
        "\n- Target full sync <= {SYNC_RATIO_MAX}x Automerge in-memory: dial -> synced {}; \
         connected -> synced {}; synced, then opened by the GP {}.",
        verdict(dial),
        verdict(alone),
        verdict(readable)
    );
    println!(
        "- Target add -> visible <= {} s: median {} ({}), max {} ({}).",
        VISIBLE_TARGET.as_secs(),
        ms(to_visible),
        met(to_visible <= VISIBLE_TARGET),
        ms(visible_max),
        met(visible_max <= VISIBLE_TARGET)
    );
    println!(
        "\nSync message bytes: the encoded phr sync messages as the initiator's session counts \
         them (requests sent + responses received), without the CBOR byte-string header of each \
         frame (1 to 9 bytes), multistream-select on each request's stream, Yamux, Noise or TCP. \
         TCP payload bytes: everything both nodes wrote on the connection from dial to \
         {WIRE_SETTLE_MS} ms after synced (Noise handshake, multistream-select, Yamux, identify, \
         ping, sync frames), counted by a relay on 127.0.0.1 in one extra run not used for timing."
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "Machine: {cores} cores; one run of this benchmark (release build), medians over the \
         repeats each row names."
    );
}

/// Prints rows as a markdown table with padded, aligned columns.
pub(crate) fn print_table(rows: &[[String; 5]]) {
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<String>| println!("| {} |", cells.join(" | "));
    for (i, row) in rows.iter().enumerate() {
        line(
            row.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect(),
        );
        if i == 0 {
            line(widths.iter().map(|w| "-".repeat(*w)).collect());
        }
    }
}

pub(crate) fn median<T: Ord + Copy>(mut samples: Vec<T>) -> T {
    samples.sort();
    samples[samples.len() / 2]
}

pub(crate) fn max(samples: &[Duration]) -> Duration {
    samples.iter().max().copied().unwrap_or_default()
}

/// Milliseconds: one decimal place, or three below 1 ms.
pub(crate) fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{ms:.3} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

pub(crate) fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}", a / b)
}

pub(crate) fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}
