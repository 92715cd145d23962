// Runs the offline viewer's own code (docs/viewer/emergency.html, the <script id="card">) in
// Node on a card's text, as a browser would: Node has the same WebCrypto and
// DecompressionStream. Usage: node tests/interop/emergency_viewer.mjs CARD_TEXT_FILE
// Prints the lines the viewer shows; exits 1 if the card does not open.
import { readFileSync } from "node:fs";

const html = readFileSync(new URL("../../docs/viewer/emergency.html", import.meta.url), "utf8");
const script = html.match(/<script id="card">([\s\S]*?)<\/script>/)[1];
const { openCard, cardLines } = new Function(script + "\nreturn { openCard, cardLines };")();
const text = readFileSync(process.argv[2], "utf8");
try {
  console.log(cardLines(await openCard(text)).join("\n"));
} catch (e) {
  console.error("the viewer refused the card: " + e.message);
  process.exit(1);
}
