#!/bin/sh
# Makes the golden suite's fixtures again (new keys, new ciphertext) and
# rewrites the expectations. Needs gpg, gpgconf, openssl and go.
set -e
cd "$(dirname "$0")/../../../.."
go run ./cmd/cryptmilter/testdata/golden/gen
go test ./cmd/cryptmilter -run 'Golden$' -count=1 -update
