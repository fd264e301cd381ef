"""Prints, for each message file named on the command line, one JSON line
with the MIME structure Python's email package reads from it, once with
the compat32 policy (email.message_from_bytes' default, what most code
uses) and once with email.policy.default: {"compat32": node, "default":
node}.

A node is {"type", "boundary" (multiparts), "parts" (containers) or
"body" (leaves: SHA-256 of the decoded body, CRLF read as LF, trailing
line breaks dropped)}; a
reading that raises gives {"error": "..."}.
"""
import email
import email.policy
import hashlib
import json
import sys


def node(msg):
    n = {"type": msg.get_content_type()}
    if msg.get_content_maintype() == "multipart":
        b = msg.get_boundary()
        if b is not None:
            n["boundary"] = b
    if msg.is_multipart():
        n["parts"] = [node(p) for p in msg.get_payload()]
    else:
        data = msg.get_payload(decode=True)
        if data is None:
            data = b""
        n["body"] = hashlib.sha256(data.replace(b"\r\n", b"\n").rstrip(b"\n")).hexdigest()
    return n


def read(raw, policy):
    try:
        return node(email.message_from_bytes(raw, policy=policy))
    except Exception as e:  # a reader that fails is a reading too
        return {"error": "%s: %s" % (type(e).__name__, e)}


for name in sys.argv[1:]:
    with open(name, "rb") as f:
        raw = f.read()
    out = {
        "compat32": read(raw, email.policy.compat32),
        "default": read(raw, email.policy.default),
    }
    sys.stdout.write(json.dumps(out, sort_keys=True) + "\n")
