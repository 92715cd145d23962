"""Opens a phr emergency link as an independent SMART Health Link client would: reads the
shlink:/ payload, POSTs the manifest request, and decrypts the embedded file with jwcrypto.

Usage: python3 tests/interop/emergency_link.py SHLINK RECIPIENT PASSCODE
Prints the document's JSON (sorted keys); exits 1 on any refusal.
"""
import base64
import json
import sys
import urllib.request

from jwcrypto import jwe, jwk

link, recipient, passcode = sys.argv[1], sys.argv[2], sys.argv[3]
encoded = link.split("shlink:/", 1)[1]
payload = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
assert set(payload) >= {"url", "key", "flag"}, payload
assert "P" in payload["flag"], payload
body = json.dumps({"recipient": recipient, "passcode": passcode}).encode()
request = urllib.request.Request(payload["url"], data=body, headers={"Content-Type": "application/json"})
manifest = json.load(urllib.request.urlopen(request, timeout=30))
file = manifest["files"][0]
assert file["contentType"] == "application/fhir+json", file
token = jwe.JWE()
token.deserialize(file["embedded"], key=jwk.JWK(kty="oct", k=payload["key"]))
print(json.dumps(json.loads(token.payload), sort_keys=True))
