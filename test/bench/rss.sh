#!/bin/bash
# Peak memory of cryptmilter on large and hostile messages, through the
# milter (serve, driven by test/bench/memdriver) and through
# `cryptmilter process`.
#
#   test/bench/rss.sh [OUTDIR]        (make bench-rss)
#
# Each milter scenario starts a fresh `cryptmilter serve` and reads its
# VmHWM from /proc/PID/status after the message(s); each process scenario
# runs under /usr/bin/time (maximum resident set size). The messages are
# made with gpg and openssl on keys generated for the run:
#
#   plain       a text/plain message of SIZE bytes (inbound: passes; outbound:
#               encrypted to bob's OpenPGP key, or to carol's S/MIME certificate)
#   pgp         PGP/MIME (signed by alice, encrypted to the gateway, gpg -z 0)
#               of about SIZE bytes
#   smime       S/MIME enveloped-data, AES-256-CBC (openssl cms -stream: BER,
#               indefinite lengths) holding a multipart/signed by alice
#   smime-gcm   the same as authEnveloped-data, AES-256-GCM
#   bomb        PGP/MIME whose compressed plaintext expands to 64 MiB
#               (limits.max_decompressed_size), alone and BOMBS at once
#
# Writes OUTDIR/rss.txt (also printed). Environment: SIZE (bytes on the
# wire, 50000000), BOMBS (16), CRYPTMILTER (a built binary; default: go
# build), RSS_WORK (a directory that keeps keys and messages for the next
# run), ONLY (scenario names to run, such as "bomb in-openpgp"), GOGC
# and GOMEMLIMIT reach serve and process as they are.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/test/bench/out}"
SIZE="${SIZE:-50000000}"
BOMBS="${BOMBS:-16}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
for p in gpg openssl go /usr/bin/time; do
	command -v "$p" >/dev/null || { echo "rss: error: $p is needed (apt-get install gnupg openssl golang time)" >&2; exit 1; }
done

# RSS_WORK keeps the keys and messages in that directory for the next run.
work="${RSS_WORK:-$(mktemp -d /tmp/cm-rss-XXXXXX)}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
serve_pid=""
stop_serve() {
	if [ -n "$serve_pid" ]; then
		kill "$serve_pid" 2>/dev/null || true
		wait "$serve_pid" 2>/dev/null || true
		serve_pid=""
	fi
}
cleanup() {
	stop_serve
	for h in "$work"/gpg-*; do [ -d "$h" ] && gpgconf --homedir "$h" --kill all 2>/dev/null; done
	[ -z "${RSS_WORK:-}" ] && rm -rf "$work"
	return 0
}
trap cleanup EXIT

bin="${CRYPTMILTER:-$work/cryptmilter}"
if [ -z "${CRYPTMILTER:-}" ]; then
	(cd "$root" && go build -o "$bin" ./cmd/cryptmilter)
fi
drv="$work/memdriver"
(cd "$root" && go build -o "$drv" ./test/bench/memdriver)
tool="$work/benchtool"
(cd "$root" && go build -o "$tool" ./test/bench/benchtool)

cd "$work"
if [ ! -f ready ]; then
# --- keys -----------------------------------------------------------------
port=$("$tool" port)
cat > c.toml <<EOF
keystore = "$work/keys"
listen = ["inet:127.0.0.1:$port"]
hostname = "mx.example.org"
[identity]
addresses = ["rt@example.org"]
[direction]
internal_hosts = []
[log]
level = "warn"
EOF
"$bin" keys -c c.toml init rt@example.org >/dev/null 2>&1
g() { gpg --homedir "$work/gpg-$1" --batch --yes --quiet --pinentry-mode loopback --passphrase '' "${@:2}"; }
for u in alice bob; do mkdir -m 0700 "gpg-$u"; done
g alice --quick-gen-key "Alice <alice@example.net>" future-default default 1d
g bob --quick-gen-key "Bob <bob@example.net>" future-default default 1d
g alice --export --armor alice@example.net > alice-pub.asc
g bob --export --armor bob@example.net > bob-pub.asc
"$bin" keys -c c.toml export --protocol openpgp rt@example.org 2>/dev/null > gw.asc
"$bin" keys -c c.toml export --protocol smime rt@example.org 2>/dev/null > gw.pem
g alice --import gw.asc 2>/dev/null
openssl req -x509 -newkey rsa:3072 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=RSS CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
leaf() { # leaf NAME ADDR: an RSA-3072 e-mail certificate issued by the CA
	openssl req -newkey rsa:3072 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
	printf "subjectAltName=email:%s\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n" "$2" > "$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
leaf alice alice@example.net
leaf carol carol@example.com
"$bin" keys -c c.toml import --ca ca.pem >/dev/null 2>&1
"$bin" keys -c c.toml import alice-pub.asc bob-pub.asc alice.pem carol.pem >/dev/null 2>&1

# --- messages ---------------------------------------------------------------
# text N: N bytes of text lines (CRLF).
text() {
	awk -v n="$1" 'BEGIN { l = "The quick brown fox jumps over the lazy dog; 0123456789 0123456789.\r\n";
		while (n >= length(l)) { printf "%s", l; n -= length(l) } while (n-- > 0) printf "x" }'
}
hdr() { # hdr FROM TO SUBJECT
	printf "From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@rss.invalid>\r\nMIME-Version: 1.0\r\n" "$1" "$2" "$3" "$3"
}
entity() { # entity N: a text/plain MIME entity with N bytes of text
	printf "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
	text "$1"
}
# Ciphertext grows by the armor or base64 (4/3, plus line ends): plaintext
# of 72 % of SIZE makes a message of about SIZE bytes.
inner=$((SIZE * 72 / 100))
{ hdr alice@example.net rt@example.org plain
  printf "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
  text "$SIZE"; } > plain-in.eml
{ hdr rt@example.org bob@example.net plain-out
  printf "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
  text "$SIZE"; } > plain-out.eml
pgpmime() { # pgpmime SUBJECT < armored
	hdr alice@example.net rt@example.org "$1"
	printf "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"rss-b\"\r\n\r\n"
	printf -- "--rss-b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n"
	printf -- "--rss-b\r\nContent-Type: application/octet-stream\r\n\r\n"
	cat
	printf "\r\n--rss-b--\r\n"
}
entity "$inner" > inner.txt
g alice --trust-model always --local-user alice@example.net --recipient rt@example.org -z 0 --sign --encrypt --armor -o - inner.txt | pgpmime pgp > pgp.eml
# The bomb: just under 64 MiB of plaintext (the literal data packet's
# header counts too), as small as zlib makes it.
entity $((64 * 1024 * 1024 - 65536)) > bomb.txt
g alice --trust-model always --recipient rt@example.org --compress-algo zlib -z 9 --encrypt --armor -o - bomb.txt | pgpmime bomb > bomb.eml
rm -f bomb.txt
openssl cms -sign -in inner.txt -signer alice.pem -inkey alice.key -md sha256 -out signed.txt 2>/dev/null
smime() { # smime SUBJECT CIPHER: signed.txt enveloped to the gateway
	hdr alice@example.net rt@example.org "$1"
	openssl cms -encrypt -stream "-$2" -in signed.txt gw.pem 2>/dev/null | grep -v "^MIME-Version:"
}
smime smime aes-256-cbc > smime.eml
smime smime-gcm aes-256-gcm > smime-gcm.eml
rm -f signed.txt inner.txt
touch ready
fi
port=$(sed -n 's/^listen = \["inet:127.0.0.1:\([0-9]*\)"\]$/\1/p' c.toml)

# --- runs -------------------------------------------------------------------
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
start_serve() {
	"$bin" serve -c c.toml 2>>serve.log &
	serve_pid=$!
	for _ in $(seq 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "rss: error: serve did not start: $(tail -3 serve.log)" >&2
	exit 1
}
report="$out/rss.txt"
printf "%-24s %10s %6s %14s %14s  %s\n" scenario "message" copies "serve MB" "process MB" "outcome (milter | process)" > "$report"
# run NAME FILE DIRECTION FROM RCPT COPIES
run() {
	local name=$1 file=$2 dir=$3 from=$4 rcpt=$5 copies=$6 res hwm pres phwm
	if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" ${name%% *} "* ]]; then return 0; fi
	start_serve
	res=$("$drv" send --connect "inet:127.0.0.1:$port" --direction "$dir" --from "$from" --rcpt "$rcpt" \
		--concurrency "$copies" "$file" 2>&1) || res="FAILED: $res"
	hwm=$(awk '/VmHWM/ {print $2}' "/proc/$serve_pid/status")
	stop_serve
	phwm="-"
	pres="-"
	if [ "$copies" = 1 ]; then
		rm -rf pout
		/usr/bin/time -f %M -o ptime "$bin" process -c c.toml --direction "$dir" --from "$from" --rcpt "$rcpt" \
			--out pout < "$file" 2>perr && true
		phwm=$(mb "$(tail -1 ptime)")
		pres=$(grep -o '"action": "[a-z]*"' pout/result.json 2>/dev/null | cut -d'"' -f4 || echo "none")
		if [ -f pout/1.eml ]; then
			pres="$pres, $(grep -m1 -o 'X-Cryptmilter-Encryption: [a-z]*' pout/1.eml || echo '(no header)'), $(stat -c %s pout/1.eml) bytes"
		fi
	fi
	printf "%-24s %10s %6s %14s %14s  %s | %s\n" "$name" "$(stat -c %s "$file")" "$copies" "$(mb "$hwm")" "$phwm" "$res" "$pres" >> "$report"
	tail -1 "$report"
}
run in-plain plain-in.eml in alice@example.net rt@example.org 1
run in-openpgp pgp.eml in alice@example.net rt@example.org 1
run in-smime-cbc smime.eml in alice@example.net rt@example.org 1
run in-smime-gcm smime-gcm.eml in alice@example.net rt@example.org 1
run out-openpgp plain-out.eml out rt@example.org bob@example.net 1
run out-smime plain-out.eml out rt@example.org carol@example.com 1
run bomb bomb.eml in alice@example.net rt@example.org 1
run "bomb x$BOMBS" bomb.eml in alice@example.net rt@example.org "$BOMBS"
{
	echo
	echo "peak RSS: serve VmHWM, process maximum resident set size (/usr/bin/time %M); MB = MiB"
	echo "limits: defaults (memory_spool 1MiB, max_concurrent 0 = $(( $(nproc) * 2 )), max_decompressed_size 64MiB); GOGC=${GOGC:-default} GOMEMLIMIT=${GOMEMLIMIT:-default}"
	echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); $("$bin" version); $(date -u +%Y-%m-%dT%H:%MZ)"
} >> "$report"
cat "$report"
