package mime

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkAmbiguity measures Parse and Ambiguity together on the shapes
// that would show a scan worse than linear: many header fields, many
// parts, deep nesting, and a large body. Compare ns/op against MB/s
// across the sizes: the cost per byte stays flat.
func BenchmarkAmbiguity(b *testing.B) {
	cases := []struct {
		name string
		raw  []byte
	}{
		{"fields-3500", manyFields(3500)},
		{"fields-35000", manyFields(35000)},
		{"parts-1000", manyParts(1000, 100)},
		{"parts-10000", manyParts(10000, 100)},
		{"depth-20", deep(20, 1<<20)},
		{"body-1MiB", manyParts(1, 1<<20)},
		{"body-16MiB", manyParts(1, 16<<20)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.raw)))
			b.ReportAllocs()
			for b.Loop() {
				e, err := Parse(c.raw, Limits{MaxDepth: 64, MaxParts: 20000})
				if err != nil {
					b.Fatal(err)
				}
				if err := Ambiguity(e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func manyFields(n int) []byte {
	var s strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&s, "X-Field-%d: value %d\r\n", i, i)
	}
	s.WriteString("Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; micalg=pgp-sha256; boundary=S\r\n\r\n")
	s.WriteString("--S\r\nContent-Type: text/plain\r\n\r\nsigned\r\n--S\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--S--\r\n")
	return []byte(s.String())
}

// manyParts is a multipart/mixed of n quoted-printable text parts of size
// bytes each.
func manyParts(n, size int) []byte {
	line := strings.Repeat("a=3Db ", 12) + "\r\n"
	text := strings.Repeat(line, size/len(line)+1)[:size]
	text = text[:strings.LastIndex(text, "\r\n")+2]
	var s strings.Builder
	s.WriteString("Content-Type: multipart/mixed; boundary=\"=_b\"\r\n\r\n")
	for i := 0; i < n; i++ {
		s.WriteString("--=_b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
		s.WriteString(text)
	}
	s.WriteString("--=_b--\r\n")
	return []byte(s.String())
}

// deep nests multiparts depth levels around a base64 leaf of size bytes.
func deep(depth, size int) []byte {
	line := strings.Repeat("QUJD", 19) + "\r\n"
	leaf := "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" + strings.Repeat(line, size/len(line))
	for i := depth; i > 0; i-- {
		b := fmt.Sprintf("=_%02d", i)
		leaf = "Content-Type: multipart/mixed; boundary=\"" + b + "\"\r\n\r\n--" + b + "\r\n" + leaf + "\r\n--" + b + "--\r\n"
	}
	return []byte(leaf)
}

// BenchmarkBadBase64 measures the strict base64 check of a leaf (a part of
// every inbound message's ambiguity scan) on 1 MB of base64.
func BenchmarkBadBase64(b *testing.B) {
	raw := make([]byte, 768<<10)
	for i := range raw {
		raw[i] = byte(i * 7)
	}
	enc := base64.StdEncoding.EncodeToString(raw)
	var sb strings.Builder
	for len(enc) > 76 {
		sb.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	sb.WriteString(enc + "\r\n")
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if n, err := badBase64(bytes.NewReader(data)); n >= 0 || err != nil {
			b.Fatal(n, err)
		}
	}
}
