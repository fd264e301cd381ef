package keystore

// Benchmarks of a large keystore. The keyring is generated once and kept
// in $TMPDIR/cryptmilter-bench-keyring-K-C (K OpenPGP keys, C
// certificates); delete it to generate again. Sizes default to 100000 and
// 10000; CRYPTMILTER_BENCH_KEYS=N uses N keys and N/10 certificates.
//
//	go test -run XXX -bench . -benchtime 5x ./keystore        # load
//	go test -run XXX -bench 'Lookup' ./keystore                # lookups

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/ProtonMail/gopenpgp/v3/profile"
)

func benchSizes() (keys, certs int) {
	keys = 100_000
	if v, err := strconv.Atoi(os.Getenv("CRYPTMILTER_BENCH_KEYS")); err == nil && v > 0 {
		keys = v
	}
	return keys, keys / 10
}

var benchOnce sync.Once
var benchDir string
var benchErr error

// benchKeyring returns the generated keyring directory.
func benchKeyring(b *testing.B) string {
	b.Helper()
	benchOnce.Do(func() {
		nk, nc := benchSizes()
		benchDir = filepath.Join(os.TempDir(), fmt.Sprintf("cryptmilter-bench-keyring-%d-%d", nk, nc))
		if _, err := os.Stat(filepath.Join(benchDir, ".complete")); err == nil {
			return
		}
		start := time.Now()
		os.RemoveAll(benchDir)
		benchErr = generateBenchKeyring(benchDir, nk, nc)
		if benchErr == nil {
			benchErr = os.WriteFile(filepath.Join(benchDir, ".complete"), nil, 0o644)
		}
		b.Logf("generated %d keys and %d certificates in %s (%s)", nk, nc, benchDir, time.Since(start).Round(time.Second))
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchDir
}

func benchAddr(i int) string { return fmt.Sprintf("u%d@bench.example", i) }

func generateBenchKeyring(dir string, nk, nc int) error {
	if _, err := ensureDirs(Options{Dir: dir}); err != nil {
		return err
	}
	pgp := crypto.PGPWithProfile(profile.Default())
	created := time.Now().Add(-24 * time.Hour).Unix()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	os.WriteFile(filepath.Join(dir, DirCA, "bench-ca.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644)

	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= nk+nc {
					return
				}
				var err error
				if i < nk {
					var k *crypto.Key
					k, err = pgp.KeyGeneration().AddUserId("", benchAddr(i)).GenerationTime(created).New().GenerateKey()
					if err == nil {
						var a string
						if a, err = k.GetArmoredPublicKey(); err == nil {
							err = os.WriteFile(filepath.Join(dir, DirOpenPGP, fmt.Sprintf("%s-%s.asc", benchAddr(i), k.GetFingerprint())), []byte(a), 0o644)
						}
					}
				} else {
					j := i - nk
					key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
					tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(j + 2)), Subject: pkix.Name{CommonName: fmt.Sprintf("C %d", j)},
						NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(5 * 365 * 24 * time.Hour),
						EmailAddresses: []string{fmt.Sprintf("c%d@bench.example", j)},
						KeyUsage:       x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
					var der []byte
					if der, err = x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey); err == nil {
						err = os.WriteFile(filepath.Join(dir, DirCerts, fmt.Sprintf("c%d.pem", j)), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
					}
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if e, ok := firstErr.Load().(error); ok {
		return e
	}
	return nil
}

// BenchmarkLoad measures loading the whole keyring (cold parse of every file).
func BenchmarkLoad(b *testing.B) {
	dir := benchKeyring(b)
	nk, nc := benchSizes()
	var s *Snapshot
	for b.Loop() {
		var err error
		if s, err = Load(Options{Dir: dir}); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if len(s.pgp) != nk || len(s.certs) != nc || len(s.problems) != 0 {
		b.Fatalf("loaded %d keys, %d certificates, problems %v", len(s.pgp), len(s.certs), s.Problems())
	}
	b.ReportMetric(float64(b.Elapsed().Seconds())/float64(b.N), "s/load")
}

// BenchmarkReloadUnchanged measures a reload when no file changed (stat
// only, parse results reused).
func BenchmarkReloadUnchanged(b *testing.B) {
	dir := benchKeyring(b)
	h, err := NewHolder(Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := h.Reload(); err != nil {
			b.Fatal(err)
		}
	}
}

func lookupLoop(b *testing.B, get func() *Snapshot, n int) {
	now := time.Now()
	// Each key verifies its self-signatures on first use; do that first
	// for the addresses the loop uses.
	const span = 4096
	for i := range span {
		if _, err := get().EncryptionKey(benchAddr(i*(n/span)), now); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	b.ResetTimer()
	for b.Loop() {
		if _, err := get().EncryptionKey(benchAddr((i%span)*(n/span)), now); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkLookup measures EncryptionKey for an address (warm key).
func BenchmarkLookup(b *testing.B) {
	dir := benchKeyring(b)
	nk, _ := benchSizes()
	s, err := Load(Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	lookupLoop(b, func() *Snapshot { return s }, nk)
}

// BenchmarkLookupDuringReload runs lookups on Holder.Current while another
// goroutine reloads the keyring in a loop.
func BenchmarkLookupDuringReload(b *testing.B) {
	dir := benchKeyring(b)
	nk, _ := benchSizes()
	h, err := NewHolder(Options{Dir: dir})
	if err != nil {
		b.Fatal(err)
	}
	stop := make(chan struct{})
	var reloads atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			h.Reload()
			reloads.Add(1)
		}
	})
	var lat []time.Duration
	get := func() *Snapshot { return h.Current() }
	now := time.Now()
	for i := range 4096 {
		get().EncryptionKey(benchAddr(i*(nk/4096)), now)
	}
	i := 0
	for b.Loop() {
		t0 := time.Now()
		if _, err := get().EncryptionKey(benchAddr((i%4096)*(nk/4096)), now); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
		i++
	}
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(reloads.Load()), "reloads")
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds()), "p99-ns")
		b.ReportMetric(float64(lat[len(lat)*999/1000].Nanoseconds()), "p99.9-ns")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
	}
}
