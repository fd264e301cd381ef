"""Reads Authentication-Results field values from standard input, each
followed by "\n\0\n", and prints for each one JSON line with the
authserv-id python3-authres reads from it ({"id": ...}) or why it could
not ({"error": ...})."""
import json
import sys

import authres

for value in sys.stdin.read().split("\n\x00\n")[:-1]:
    try:
        r = authres.AuthenticationResultsHeader.parse_value(value)
        out = {"id": r.authserv_id}
    except Exception as e:  # a reader that fails is a reading too
        out = {"error": "%s: %s" % (type(e).__name__, e)}
    sys.stdout.write(json.dumps(out) + "\n")
