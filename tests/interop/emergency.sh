#!/usr/bin/env bash
# The emergency card and link, read by others (issue 17; run by .ci/run): phr makes a card from
# a real fixture, zbarimg decodes its PNG, and two independent readers open it: jwcrypto (a JOSE
# library in Python) and the offline viewer's own code (docs/viewer/emergency.html) in Node.
# Both must give what `phr emergency open` gives; a changed card must be refused by both. Then
# the home's node serves a link on 127.0.0.1 and a SMART Health Link client written in Python
# (urllib and jwcrypto) opens it, to the same document.
# Usage: tests/interop/emergency.sh PATH_TO_PHR
set -euo pipefail
phr=$(realpath "$1")
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PHR_HOME="$work/home"
"$phr" init --name "Fletcher Hyatt" --birth-date 1915-07-03 >/dev/null
"$phr" import ../../../shared/fixtures/fhir/synthea/Fletcher_Hyatt_fe0562b5-f517-4951-8366-32fdab088930.json >/dev/null
"$phr" emergency card --png "$work/card.png" >/dev/null
zbarimg --raw -q "$work/card.png" 2>/dev/null | tr -d '\n' >"$work/card.txt"
grep -q '^PHRE1\.' "$work/card.txt"

"$phr" --json emergency open "$(cat "$work/card.txt")" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), sort_keys=True))' >"$work/phr.json"
python3 emergency_jose.py "$work/card.txt" >"$work/jose.json"
cmp "$work/phr.json" "$work/jose.json"
node emergency_viewer.mjs "$work/card.txt" >"$work/viewer.txt"
grep -q "Naproxen sodium 220 MG Oral Tablet" "$work/viewer.txt"
grep -q "Patient: Fletcher Hyatt" "$work/viewer.txt"

# One character of the ciphertext changed: both refuse it.
sed 's/.\{40\}$/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/' "$work/card.txt" >"$work/changed.txt"
if python3 emergency_jose.py "$work/changed.txt" >/dev/null 2>&1; then
  echo "jwcrypto opened a changed card" >&2; exit 1
fi
if node emergency_viewer.mjs "$work/changed.txt" >/dev/null 2>&1; then
  echo "the viewer opened a changed card" >&2; exit 1
fi
echo "emergency card: phr, jwcrypto and the offline viewer agree; a changed card is refused by both"

"$phr" node start --listen /ip4/127.0.0.1/tcp/0 --no-mdns --emergency-listen 127.0.0.1:0 >/dev/null
trap '"$phr" node stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
link=$("$phr" --json emergency link --passcode 472913 | python3 -c 'import json,sys; print(json.load(sys.stdin)["link"])')
python3 emergency_link.py "$link" "Interop check" 472913 >"$work/link.json"
"$phr" --json emergency open "$link" --recipient "phr itself" --passcode 472913 \
  | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin), sort_keys=True))' >"$work/phr-link.json"
cmp <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); [e.pop("fullUrl") if e["resource"]["resourceType"]=="Composition" else None for e in d["entry"]]; d["entry"][0]["resource"].pop("id"); print(json.dumps(d, sort_keys=True))' "$work/link.json") \
    <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); [e.pop("fullUrl") if e["resource"]["resourceType"]=="Composition" else None for e in d["entry"]]; d["entry"][0]["resource"].pop("id"); print(json.dumps(d, sort_keys=True))' "$work/phr-link.json")
"$phr" audit | grep -q "EMERGENCY ACCESS: Interop check opened the emergency link"
echo "emergency link: a Python SMART Health Link client (jwcrypto) opens what phr opens; the access is in the patient's audit"
