package crypto

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/ProtonMail/gopenpgp/v3/profile"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// outBenchKeystore is a keystore with the gateway identity and n recipients
// with their own Curve25519 keys (made with gopenpgp: gpg is not needed).
func outBenchKeystore(b *testing.B, n int) (string, []string) {
	b.Helper()
	dir := b.TempDir()
	opts := keystore.Options{Dir: dir}
	now := time.Now()
	if _, err := keystore.Init(opts, []string{outGatewayAddr}, false, now.Add(-time.Hour)); err != nil {
		b.Fatal(err)
	}
	pgp := pgpcrypto.PGPWithProfile(profile.Default())
	var rcpts []string
	for i := range n {
		addr := fmt.Sprintf("r%02d@example.net", i)
		k, err := pgp.KeyGeneration().AddUserId("", addr).GenerationTime(now.Add(-time.Hour).Unix()).New().GenerateKey()
		if err != nil {
			b.Fatal(err)
		}
		pub, err := k.GetArmoredPublicKey()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := keystore.Import(opts, []byte(pub), addr+".asc", false, nil, now); err != nil {
			b.Fatal(err)
		}
		rcpts = append(rcpts, addr)
	}
	return dir, rcpts
}

func outBenchEngine(b *testing.B, ks string, threshold int64) (*Engine, *keystore.Snapshot, *spool.Dir) {
	b.Helper()
	pol := testPolicy(nil)
	sp, err := spool.Open(b.TempDir(), threshold)
	if err != nil {
		b.Fatal(err)
	}
	snap, err := keystore.Load(keystore.Options{Dir: ks})
	if err != nil {
		b.Fatal(err)
	}
	return New(pol, sp), snap, sp
}

// BenchmarkOutbound20Recipients: one 10 KB message to 20 recipients, each
// with its own Curve25519 key, split per recipient (20 signed and
// encrypted copies).
func BenchmarkOutbound20Recipients(b *testing.B) {
	ks, rcpts := outBenchKeystore(b, 20)
	e, snap, sp := outBenchEngine(b, ks, 1<<20)
	var text strings.Builder
	for text.Len() < 10<<10 {
		text.WriteString("Grüße, this is line of a ticket notification with some 8-bit text. \r\n")
	}
	raw := "From: rt@example.org\r\nTo: " + strings.Join(rcpts, ", ") + "\r\nSubject: bench\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text.String()
	br := bufio.NewReader(strings.NewReader(raw))
	h, err := mime.ReadHeader(br, 0)
	if err != nil {
		b.Fatal(err)
	}
	rest, _ := io.ReadAll(br)
	body := sp.New()
	body.Write(rest)
	defer body.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		plan, err := e.Process(context.Background(), &Input{
			Direction: Outbound,
			Envelope:  Envelope{From: outGatewayAddr, Rcpts: rcpts},
			Message:   Message{Header: h, Body: body},
			Now:       time.Now(),
			Keys:      snap,
		})
		if err != nil {
			b.Fatal(err)
		}
		if len(plan.Copies) != 19 || plan.Body == nil {
			b.Fatalf("%d extra copies, want 19", len(plan.Copies))
		}
		plan.Close()
	}
}

// BenchmarkOutboundLargeAttachment signs and encrypts a message with a
// 50 MB attachment for one recipient and reports the peak Go heap
// (sampled) and the process's peak RSS (VmHWM, which includes the test
// binary and the input generation).
func BenchmarkOutboundLargeAttachment(b *testing.B) {
	ks, rcpts := outBenchKeystore(b, 1)
	outBenchLarge(b, ks, rcpts)
}

// BenchmarkOutboundLargeAttachmentSMIME is the same for an S/MIME
// recipient; the signed entity and the EnvelopedData stream through the
// spool (smime.SignDetachedReader, smime.EncryptTo). Run it alone for its
// own peak RSS: VmHWM is per process.
func BenchmarkOutboundLargeAttachmentSMIME(b *testing.B) {
	ks, _ := outBenchKeystore(b, 0)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(7),
		Subject:        pkix.Name{CommonName: "s@example.com"},
		EmailAddresses: []string{"s@example.com"},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := keystore.Import(keystore.Options{Dir: ks}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), "s.pem", false, nil, time.Now()); err != nil {
		b.Fatal(err)
	}
	outBenchLarge(b, ks, []string{"s@example.com"})
}

func outBenchLarge(b *testing.B, ks string, rcpts []string) {
	e, snap, sp := outBenchEngine(b, ks, 1<<20)
	h := mime.Header{
		{Name: "From", Value: outGatewayAddr},
		{Name: "To", Value: rcpts[0]},
		{Name: "Subject", Value: "large"},
		{Name: "MIME-Version", Value: "1.0"},
		{Name: "Content-Type", Value: `multipart/mixed; boundary="b"`},
	}
	body := sp.New()
	defer body.Close()
	io.WriteString(body, "--b\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	chunk := make([]byte, 57*1024)
	var line [78]byte
	for written := 0; written < 50<<20; written += len(chunk) {
		rand.Read(chunk)
		for i := 0; i < len(chunk); i += 57 {
			base64.StdEncoding.Encode(line[:76], chunk[i:i+57])
			line[76], line[77] = '\r', '\n'
			body.Write(line[:])
		}
	}
	io.WriteString(body, "--b--\r\n")
	runtime.GC()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	b.ResetTimer()
	var outSize int64
	for b.Loop() {
		plan, err := e.Process(context.Background(), &Input{
			Direction: Outbound,
			Envelope:  Envelope{From: outGatewayAddr, Rcpts: rcpts},
			Message:   Message{Header: h, Body: body},
			Now:       time.Now(),
			Keys:      snap,
		})
		if err != nil {
			b.Fatal(err)
		}
		if plan.Body == nil || !plan.Body.OnDisk() {
			b.Fatal("no spooled body")
		}
		outSize = plan.Body.Size()
		plan.Close()
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MB")
	b.ReportMetric(float64(outSize)/(1<<20), "out-MB")
	if st, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range bytes.Split(st, []byte("\n")) {
			if bytes.HasPrefix(l, []byte("VmHWM:")) {
				var kb float64
				fmt.Sscanf(string(bytes.TrimPrefix(l, []byte("VmHWM:"))), "%f", &kb)
				b.ReportMetric(kb/1024, "peak-RSS-MB")
			}
		}
	}
}
