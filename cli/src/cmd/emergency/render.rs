//! The emergency card drawn: the QR code in the terminal, as PNG and SVG, the key facts in
//! plain text (80 columns), the printable wallet card (HTML), and a card read back.

use anyhow::{Context as _, Result};
use phr_core::{
    emergency::{Item, Summary},
    view::describe_resource,
};
use qrcode::{Color, EcLevel, QrCode, render::unicode};
use serde_json::Value;

use super::of_type;

/// Pixels a QR module takes in the PNG.
const PNG_MODULE_PX: usize = 6;
/// The light border around a QR code, in modules (ISO/IEC 18004 asks for 4).
const QUIET_MODULES: usize = 4;

/// The QR code of a card's text, error correction L (the most it holds).
pub fn code(text: &str) -> Result<QrCode> {
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L)
        .context("the card does not fit one QR code")
}

pub fn terminal(code: &QrCode) -> String {
    code.render::<unicode::Dense1x2>()
        .dark_color(unicode::Dense1x2::Light)
        .light_color(unicode::Dense1x2::Dark)
        .build()
        + "\n"
}

/// Whether the module at (`x`, `y`) of the code with its quiet zone is dark.
fn dark(code: &QrCode, x: usize, y: usize) -> bool {
    let width = code.width();
    let (Some(x), Some(y)) = (x.checked_sub(QUIET_MODULES), y.checked_sub(QUIET_MODULES)) else {
        return false;
    };
    x < width && y < width && code[(x, y)] == Color::Dark
}

pub fn png(code: &QrCode) -> Result<Vec<u8>> {
    let modules = code.width() + 2 * QUIET_MODULES;
    let side = modules * PNG_MODULE_PX;
    let mut pixels = vec![255u8; side * side];
    for y in 0..modules {
        for x in 0..modules {
            if dark(code, x, y) {
                for row in 0..PNG_MODULE_PX {
                    let start = (y * PNG_MODULE_PX + row) * side + x * PNG_MODULE_PX;
                    pixels[start..start + PNG_MODULE_PX].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    let side = u32::try_from(side).context("the image is too large")?;
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(out)
}

pub fn svg(code: &QrCode) -> String {
    let modules = code.width() + 2 * QUIET_MODULES;
    let mut path = String::new();
    for y in 0..modules {
        for x in 0..modules {
            if dark(code, x, y) {
                path.push_str(&format!("M{x} {y}h1v1h-1z"));
            }
        }
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {modules} {modules}\" \
         shape-rendering=\"crispEdges\"><rect width=\"{modules}\" height=\"{modules}\" \
         fill=\"#fff\"/><path fill=\"#000\" d=\"{path}\"/></svg>\n"
    )
}

fn list(out: &mut String, title: &str, items: &[Item], none: &str) {
    out.push_str(&format!("{title}:\n"));
    if items.is_empty() {
        out.push_str(&format!("  {none}\n"));
    }
    for item in items {
        out.push_str(&format!("  - {}\n", item.text));
    }
}

/// The key facts in plain text, one fact a line, for the terminal and beside the QR code.
pub fn plain(summary: &Summary) -> String {
    let mut out = String::from("EMERGENCY CARD\n");
    out.push_str(&format!(
        "Name: {}\n",
        summary.name.as_deref().unwrap_or("(not recorded)")
    ));
    if let Some(nhs) = &summary.nhs_number {
        out.push_str(&format!("NHS number: {nhs}\n"));
    }
    if let Some(born) = &summary.birth_date {
        out.push_str(&format!("Born: {born}\n"));
    }
    if let Some(blood) = &summary.blood_group {
        out.push_str(&format!("Blood group: {}\n", blood.text));
    }
    list(&mut out, "Allergies", &summary.allergies, "none recorded");
    list(&mut out, "Medicines", &summary.medicines, "none recorded");
    list(&mut out, "Problems", &summary.problems, "none recorded");
    if !summary.decisions.is_empty() {
        list(
            &mut out,
            "Decisions (advance, resuscitation)",
            &summary.decisions,
            "",
        );
    }
    out.push_str("Emergency contacts:\n");
    if summary.contacts.is_empty() {
        out.push_str("  none recorded\n");
    }
    for contact in &summary.contacts {
        out.push_str(&format!(
            "  - {}{}{}\n",
            contact.name,
            contact
                .relationship
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            contact
                .phone
                .as_deref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default()
        ));
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A printable page: the card to cut out (the QR code on one face, the key facts on the
/// other, a fold between them), sized as a bank card (85.6 mm by 54 mm).
pub fn html(summary: &Summary, code: &QrCode, dropped: &[String]) -> String {
    let facts = escape(&plain(summary));
    let note = if dropped.is_empty() {
        String::new()
    } else {
        format!(
            "<p class=\"note\">The code leaves off {} problems or medicines to fit; the list \
             here has them all.</p>",
            dropped.len()
        )
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Emergency card</title>
<style>
@page {{ size: A4; margin: 15mm; }}
body {{ font-family: sans-serif; color: #000; }}
.card {{ width: 85.6mm; height: 54mm; border: 0.3mm dashed #555; box-sizing: border-box;
  padding: 3mm; overflow: hidden; display: inline-block; vertical-align: top; }}
.front svg {{ height: 40mm; width: 40mm; float: left; margin-right: 3mm; }}
.front h1 {{ font-size: 4.2mm; margin: 0 0 1mm 0; color: #b00; }}
.front p {{ font-size: 2.6mm; margin: 0 0 1mm 0; }}
.back pre {{ font-size: 1.9mm; line-height: 1.15; margin: 0; white-space: pre-wrap; }}
.note {{ font-size: 2.2mm; }}
.help {{ font-size: 3.2mm; margin-top: 8mm; max-width: 170mm; }}
</style></head><body>
<div class="card front">{qr}<h1>EMERGENCY</h1>
<p><b>{name}</b></p><p>Scan for allergies, medicines, problems and contacts.</p>
<p>Read with any QR reader and the phr viewer, or <code>phr emergency open</code>; no network needed.</p></div>
<div class="card back"><pre>{facts}</pre>{note}</div>
<p class="help">Cut out along the dashed lines and fold them back to back. Anyone who holds this
card can read it. It cannot be withdrawn once printed: when your medicines change, make a new
card and destroy this one.</p>
</body></html>
"#,
        qr = svg(code),
        name = escape(summary.name.as_deref().unwrap_or("")),
    )
}

/// A card's document as a clinician reads it: who, then each section's entries in plain
/// language.
pub fn from_document(document: &Value) -> String {
    let mut out = String::from("EMERGENCY CARD (read from its code)\n");
    if let Some(patient) = of_type(document, "Patient").next() {
        let today = crate::context::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let header = phr_core::view::header_of(patient, None, today);
        out.push_str(&format!(
            "Patient: {}\n",
            header.name.as_deref().unwrap_or("(no name recorded)")
        ));
        if let Some(nhs) = &header.nhs_number {
            out.push_str(&format!("NHS number: {nhs}\n"));
        }
        if let Some(born) = &header.birth_date {
            out.push_str(&format!("Born: {born}\n"));
        }
        for contact in patient["contact"].as_array().into_iter().flatten() {
            let name = contact["name"]["text"].as_str().map_or_else(
                || {
                    let given: Vec<&str> = contact["name"]["given"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    format!(
                        "{} {}",
                        given.join(" "),
                        contact["name"]["family"].as_str().unwrap_or("")
                    )
                },
                str::to_string,
            );
            let phone = contact["telecom"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|t| t["system"] == "phone")
                .and_then(|t| t["value"].as_str())
                .unwrap_or("no phone");
            out.push_str(&format!("Contact: {} ({phone})\n", name.trim()));
        }
    }
    let by_url = |url: &str| {
        document["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["fullUrl"] == url)
            .map(|e| &e["resource"])
    };
    if let Some(composition) = of_type(document, "Composition").next() {
        let sections = composition["section"].as_array();
        let has = |loinc: &str| {
            sections
                .into_iter()
                .flatten()
                .any(|s| s["code"]["coding"][0]["code"] == loinc)
        };
        // An emergency reader must not take silence for "none".
        if !has("48765-2") {
            out.push_str("Allergies: none recorded on this card\n");
        }
        if !has("10160-0") {
            out.push_str("Medicines: none recorded on this card\n");
        }
        for section in sections.into_iter().flatten() {
            out.push_str(&format!(
                "{}:\n",
                section["title"].as_str().unwrap_or("Section")
            ));
            for entry in section["entry"].as_array().into_iter().flatten() {
                let text = entry["reference"]
                    .as_str()
                    .and_then(by_url)
                    .map(describe_resource)
                    .unwrap_or_else(|| "(an entry the card does not carry)".into());
                out.push_str(&format!("  - {text}\n"));
            }
        }
    }
    out
}
