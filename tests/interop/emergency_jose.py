"""Opens a phr emergency card with an independent JOSE implementation (jwcrypto).

Usage: python3 tests/interop/emergency_jose.py CARD_TEXT_FILE
Prints the document's JSON (sorted keys); exits 1 if jwcrypto cannot decrypt it.
"""
import json
import sys

from jwcrypto import jwe, jwk

text = open(sys.argv[1]).read().strip()
if not text.startswith("PHRE1."):
    sys.exit("not a phr emergency card")
key, compact = text[len("PHRE1."):].split(".", 1)
token = jwe.JWE()
token.deserialize(compact, key=jwk.JWK(kty="oct", k=key))
header = token.jose_header
assert header["alg"] == "dir" and header["enc"] == "A256GCM" and header["zip"] == "DEF", header
print(json.dumps(json.loads(token.payload), sort_keys=True))
