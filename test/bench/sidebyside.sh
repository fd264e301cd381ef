#!/bin/bash
# cryptmilter against gpg/openssl per message, side by side, on the same
# keys and the same message size, back to back on this machine.
#
#   test/bench/sidebyside.sh [OUTDIR]        (make bench-sidebyside)
#
# cryptmilter runs as `cryptmilter serve` and is driven through the milter
# protocol by `cryptmilter bench` (inbound: real ciphertext signed by a
# correspondent whose public key the gateway has, so signatures are valid).
# The peers run one process per message with WORKERS in parallel, as a
# content filter calling gpg or openssl would. Server CPU is read from
# /proc (utime+stime of the serve process; for the peers, of every child
# process, plus gpg-agent's). Writes OUTDIR/results.tsv (one line per run),
# OUTDIR/summary.txt (the table with the ratios) and, when gnuplot is
# installed, OUTDIR/throughput.png (throughput against concurrency).
#
# Environment: SIZE (message body bytes, 10000), CONC ("1 8 32 128"),
# ONLY (the runs to make, e.g. "out/openpgp in/smime"; default all),
# N_OUT and N_IN (messages per cryptmilter run; default 20 per session, at
# least 400), N_PEER (messages per peer run, 200), WORKERS (2), CRYPTMILTER
# (a built binary; default: go build), CRYPTMILTER_SERVE (the binary that
# serves, default CRYPTMILTER: to measure an older build with this bench
# client), SKIP_PEERS=1 (cryptmilter only), GPG_OPTS (more gpg options for
# the outbound peer, such as "-z 0" for large messages). GOGC and
# GOMEMLIMIT reach the serve process as they are.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/test/bench/out}"
SIZE="${SIZE:-10000}"
CONC="${CONC:-1 8 32 128}"
N_PEER="${N_PEER:-200}"
WORKERS="${WORKERS:-2}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

for p in gpg openssl go; do
	command -v "$p" >/dev/null || { echo "sidebyside: error: $p is needed (apt-get install gnupg openssl golang)" >&2; exit 1; }
done

work="$(mktemp -d /tmp/cm-sidebyside-XXXXXX)"
serve_pid=""
cleanup() {
	[ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
	for h in "$work"/gpg-*; do [ -d "$h" ] && gpgconf --homedir "$h" --kill all 2>/dev/null; done
	rm -rf "$work"
	return 0
}
trap cleanup EXIT

bin="${CRYPTMILTER:-$work/cryptmilter}"
if [ -z "${CRYPTMILTER:-}" ]; then
	(cd "$root" && go build -o "$bin" ./cmd/cryptmilter)
fi
tool="$work/benchtool"
(cd "$root" && go build -o "$tool" ./test/bench/benchtool)
tck=$(getconf CLK_TCK)
[ "$tck" = 100 ] || { echo "sidebyside: error: CLK_TCK is $tck, benchtool assumes 100" >&2; exit 1; }
cpu_of() { awk '{print $14+$15}' "/proc/$1/stat"; } # clock ticks, user+system
cpu_children() { awk '{print $16+$17}' "/proc/$$/stat"; } # waited-for children of this shell

# --- keys -----------------------------------------------------------------
cd "$work"
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
"$bin" keys -c c.toml init rt@example.org >/dev/null

# alice: correspondent who sends inbound mail (OpenPGP and S/MIME); bob:
# outbound OpenPGP recipient; carol: outbound S/MIME recipient.
g() { gpg --homedir "$work/gpg-$1" --batch --yes --quiet --pinentry-mode loopback --passphrase '' "${@:2}"; }
for u in alice bob gw; do mkdir -m 0700 "gpg-$u"; done
g alice --quick-gen-key "Alice <alice@example.net>" future-default default 1d
g bob --quick-gen-key "Bob <bob@example.net>" future-default default 1d
g alice --export-secret-keys --armor alice@example.net > alice-sec.asc
g alice --export --armor alice@example.net > alice-pub.asc
g bob --export --armor bob@example.net > bob-pub.asc
openssl req -x509 -newkey rsa:3072 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=Bench CA" \
	-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
leaf() { # leaf NAME ADDR: an RSA-3072 e-mail certificate issued by the bench CA
	openssl req -newkey rsa:3072 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
	printf "subjectAltName=email:%s\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n" "$2" > "$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
	cat "$1.key" "$1.pem" > "$1-bundle.pem"
}
leaf alice alice@example.net
leaf carol carol@example.com
"$bin" keys -c c.toml import --ca ca.pem >/dev/null
"$bin" keys -c c.toml import alice-pub.asc bob-pub.asc alice.pem carol.pem >/dev/null
# The peers get the same keys: the gateway's OpenPGP secret key and S/MIME
# identity from the keystore, the correspondents' public keys.
gwpgp=$(ls keys/private/openpgp/*.asc | head -1)
gwsmime=$(ls keys/private/smime/*.pem | head -1)
g gw --import "$gwpgp" alice-pub.asc bob-pub.asc 2>/dev/null
openssl pkey -in "$gwsmime" -out gw.key 2>/dev/null
openssl x509 -in "$gwsmime" -out gw.pem 2>/dev/null
g alice --import <(g gw --export --armor rt@example.org) 2>/dev/null

# --- messages for the peers ------------------------------------------------
mkdir msgs
"$tool" messages msgs "$SIZE" "$N_PEER"
mkdir ct-pgp ct-smime
for f in msgs/*.eml; do
	b=$(basename "$f" .eml)
	g alice --trust-model always --local-user alice@example.net --recipient rt@example.org --sign --encrypt --armor -o "ct-pgp/$b.asc" "$f"
	openssl cms -sign -in "$f" -signer alice.pem -inkey alice.key -md sha256 2>/dev/null |
		openssl cms -encrypt -aes256 -out "ct-smime/$b.p7m" gw.pem 2>/dev/null
done

# --- runs ------------------------------------------------------------------
"${CRYPTMILTER_SERVE:-$bin}" serve -c c.toml 2>serve.log &
serve_pid=$!
for _ in $(seq 50); do
	(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
	sleep 0.1
done

tsv="$out/results.tsv"
printf "tool\tdirection\tprotocol\tconcurrency\tmessages\tseconds\tmsgs_per_s\tcpu_us_per_msg\tp99_ms\n" > "$tsv"

# bench_run DIR PROTO CONC N [args...]: cryptmilter through the milter.
bench_run() {
	local dir=$1 proto=$2 conc=$3 n=$4; shift 4
	local c0 c1 js
	case " ${ONLY:-$dir/$proto} " in *" $dir/$proto "*) ;; *) return 0 ;; esac
	c0=$(cpu_of "$serve_pid")
	js=$("$bin" bench --json --connect "inet:127.0.0.1:$port" --direction "$dir" --size "$SIZE" \
		--messages "$n" --concurrency "$conc" "$@" 2>>bench.err) || { echo "sidebyside: bench failed: $(tail -3 bench.err)" >&2; exit 1; }
	c1=$(cpu_of "$serve_pid")
	echo "$js" | "$tool" row "$dir" "$proto" "$conc" "$n" "$c0" "$c1" >> "$tsv"
}

# peer_run DIR PROTO CMD: CMD (reading the file named by $1) for every
# message, WORKERS at a time; CPU of the children plus gpg-agent.
peer_run() {
	local dir=$1 proto=$2 cmd=$3 files agent a0=0 a1=0 c0 c1 t0 t1
	case "$dir/$proto" in
	out/*) files=(msgs/*.eml) ;;
	in/openpgp) files=(ct-pgp/*.asc) ;;
	in/smime) files=(ct-smime/*.p7m) ;;
	esac
	agent=$(pgrep -f "gpg-agent --homedir $work/gpg-" | head -1 || true)
	[ -n "$agent" ] && a0=$(cpu_of "$agent")
	c0=$(cpu_children)
	t0=$(date +%s.%N)
	printf "%s\n" "${files[@]}" | xargs -P "$WORKERS" -I{} bash -c "$cmd" _ {}
	t1=$(date +%s.%N)
	c1=$(cpu_children)
	[ -n "$agent" ] && a1=$(cpu_of "$agent")
	awk -v d="$dir" -v p="$proto" -v w="$WORKERS" -v n="${#files[@]}" -v t0="$t0" -v t1="$t1" \
		-v c="$((c1 - c0 + a1 - a0))" -v tck="$tck" -v tool="$4" \
		'BEGIN { s = t1 - t0; printf "%s\t%s\t%s\t%s\t%d\t%.3f\t%.1f\t%.0f\t\n", tool, d, p, w, n, s, n / s, c / tck * 1e6 / n }' >> "$tsv"
}

export work
G="gpg --homedir $work/gpg-gw --batch --yes --quiet --pinentry-mode loopback --passphrase '' --trust-model always"
# Warm gpg-agent up so that its start is not counted.
echo warm | $G --local-user rt@example.org --recipient bob@example.net --sign --encrypt -o /dev/null

for c in $CONC; do
	n=$((c * 20 > 400 ? c * 20 : 400))
	bench_run out openpgp "$c" "${N_OUT:-$n}" --from rt@example.org --rcpt bob@example.net
	bench_run in openpgp "$c" "${N_IN:-$n}" -c c.toml --from alice@example.net --rcpt rt@example.org \
		--protocol openpgp --signer-key alice-sec.asc
done
bench_run out smime 8 "${N_OUT:-400}" --from rt@example.org --rcpt carol@example.com
bench_run in smime 8 "${N_IN:-400}" -c c.toml --from alice@example.net --rcpt rt@example.org \
	--protocol smime --signer-key alice-bundle.pem

if [ -z "${SKIP_PEERS:-}" ]; then
peer_run out openpgp "$G ${GPG_OPTS:-} --local-user rt@example.org --recipient bob@example.net --sign --encrypt --armor -o /dev/null \"\$1\"" gpg
peer_run in openpgp "$G --decrypt -o /dev/null \"\$1\" 2>/dev/null" gpg
peer_run out smime "openssl cms -sign -in \"\$1\" -signer $work/gw.pem -inkey $work/gw.key -md sha256 2>/dev/null | openssl cms -encrypt -aes256 -out /dev/null $work/carol.pem" openssl
peer_run in smime "openssl cms -decrypt -in \"\$1\" -recip $work/gw.pem -inkey $work/gw.key 2>/dev/null | openssl cms -verify -CAfile $work/ca.pem -out /dev/null 2>/dev/null" openssl
fi

"$tool" summary "$tsv" > "$out/summary.txt"
hwm=$(awk '/VmHWM/ {print $2 " " $3}' "/proc/$serve_pid/status")
{
	echo
	echo "serve: peak RSS (VmHWM) $hwm; GOGC=${GOGC:-default} GOMEMLIMIT=${GOMEMLIMIT:-default}"
	echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB;" \
		"$("$bin" version); $(gpg --version | head -1); $(openssl version)"
	echo "size $SIZE bytes; peers: $WORKERS workers, one process per message; $(date -u +%Y-%m-%dT%H:%MZ)"
} >> "$out/summary.txt"
cat "$out/summary.txt"
if command -v gnuplot >/dev/null; then
	gnuplot -e "tsv='$tsv'; png='$out/throughput.png'" "$here/throughput.gp"
	echo "plot: $out/throughput.png"
else
	echo "sidebyside: hint: apt-get install gnuplot-nox for the plot" >&2
fi
