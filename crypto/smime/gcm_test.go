package smime

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"testing"
	"testing/iotest"
)

// TestGCMOpener: the streaming opener decrypts what crypto/cipher's AES-GCM
// sealed, for 12-byte and other nonces, with and without additional data,
// whatever the pieces it reads, and refuses every changed tag, tag length,
// additional data and ciphertext.
func TestGCMOpener(t *testing.T) {
	for _, keyLen := range []int{16, 24, 32} {
		for _, nonceLen := range []int{12, 1, 8, 16, 60} {
			for _, size := range []int{0, 1, 15, 16, 17, 1000, 16*64 + 5, gcmChunk, gcmChunk + 16, 2*gcmChunk + 3} {
				for _, aadLen := range []int{0, 5, 16, 100} {
					checkGCM(t, keyLen, nonceLen, size, aadLen)
				}
			}
		}
	}
}

func checkGCM(t *testing.T, keyLen, nonceLen, size, aadLen int) {
	t.Helper()
	key, nonce, pt, aad := random(keyLen), random(nonceLen), random(size), random(aadLen)
	block, _ := aes.NewCipher(key)
	var aead cipher.AEAD
	var err error
	if nonceLen == 12 {
		aead, err = cipher.NewGCM(block)
	} else {
		aead, err = cipher.NewGCMWithNonceSize(block, nonceLen)
	}
	if err != nil {
		t.Fatal(err)
	}
	sealed := aead.Seal(nil, nonce, pt, aad)
	ct, tag := sealed[:size], sealed[size:]
	open := func(ct []byte) (*gcmOpener, []byte) {
		o := newGCMOpener(block, nonce)
		var out bytes.Buffer
		if err := o.copy(&out, iotest.HalfReader(bytes.NewReader(ct))); err != nil {
			t.Fatal(err)
		}
		return o, out.Bytes()
	}
	o, got := open(ct)
	if !bytes.Equal(got, pt) {
		t.Fatalf("key %d nonce %d size %d aad %d: plaintext differs", keyLen, nonceLen, size, aadLen)
	}
	if !o.check(aad, tag) {
		t.Fatalf("key %d nonce %d size %d aad %d: good tag refused", keyLen, nonceLen, size, aadLen)
	}
	if !o.check(aad, tag[:12]) {
		t.Fatalf("key %d nonce %d size %d aad %d: truncated good tag refused", keyLen, nonceLen, size, aadLen)
	}
	bad := append([]byte(nil), tag...)
	bad[len(bad)-1] ^= 1
	if o.check(aad, bad) {
		t.Fatalf("key %d nonce %d size %d aad %d: changed tag accepted", keyLen, nonceLen, size, aadLen)
	}
	if o.check(append(aad, 0), tag) {
		t.Fatalf("key %d nonce %d size %d aad %d: longer additional data accepted", keyLen, nonceLen, size, aadLen)
	}
	if size > 0 {
		changed := append([]byte(nil), ct...)
		changed[size/2] ^= 0x80
		if o, _ := open(changed); o.check(aad, tag) {
			t.Fatalf("key %d nonce %d size %d aad %d: changed ciphertext accepted", keyLen, nonceLen, size, aadLen)
		}
	}
}

func random(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestGFMul checks the multiplication against the definition, bit by bit
// (SP 800-38D algorithm 1).
func TestGFMul(t *testing.T) {
	for range 200 {
		x, y := loadBlock(random(16)), loadBlock(random(16))
		if got, want := gfMul(x, y), slowMul(x, y); got != want {
			t.Fatalf("gfMul(%x, %x) = %x, want %x", x, y, got, want)
		}
	}
	h := loadBlock(random(16))
	want := gcmBlock{1 << 63, 0}
	for n := range uint64(40) {
		if got := gfPow(h, n); got != want {
			t.Fatalf("gfPow(h, %d) = %x, want %x", n, got, want)
		}
		want = gfMul(want, h)
	}
}

func slowMul(x, y gcmBlock) gcmBlock {
	var z gcmBlock
	v := y
	for i := 0; i < 128; i++ {
		var bit uint64
		if i < 64 {
			bit = x.hi >> (63 - i) & 1
		} else {
			bit = x.lo >> (127 - i) & 1
		}
		if bit == 1 {
			z = z.xor(v)
		}
		lsb := v.lo & 1
		v.lo = v.lo>>1 | v.hi<<63
		v.hi >>= 1
		if lsb == 1 {
			v.hi ^= 0xe1 << 56
		}
	}
	return z
}

// BenchmarkGCMOpener measures the streaming opener against crypto/cipher's
// AES-GCM on 1 MB (the opener's GHASH is constant-time integer arithmetic,
// the standard library's uses carry-less multiplication instructions).
func BenchmarkGCMOpener(b *testing.B) {
	key, nonce, pt := random(32), random(12), random(1<<20)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	sealed := aead.Seal(nil, nonce, pt, nil)
	ct, tag := sealed[:len(pt)], sealed[len(pt):]
	b.Run("stream", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		out := make([]byte, len(ct))
		for b.Loop() {
			o := newGCMOpener(block, nonce)
			o.decrypt(out, ct)
			if !o.check(nil, tag) {
				b.Fatal("tag")
			}
		}
	})
	b.Run("crypto-cipher", func(b *testing.B) {
		b.SetBytes(int64(len(pt)))
		out := make([]byte, 0, len(ct))
		for b.Loop() {
			if _, err := aead.Open(out, nonce, sealed, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
