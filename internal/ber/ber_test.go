package ber

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestToDER(t *testing.T) {
	long := strings.Repeat("ab", 200) // 200 bytes
	tests := []struct {
		name    string
		in, out string // hex
		wantErr bool
	}{
		{name: "der-unchanged", in: "3006020101020102", out: "3006020101020102"},
		{name: "indefinite-sequence", in: "3080020101020102" + "0000", out: "3006020101020102"},
		{name: "nested-indefinite", in: "3080" + "a080" + "0401ff" + "0000" + "0000", out: "3005a0030401ff"},
		{name: "constructed-octets", in: "2480" + "0402aabb" + "0401cc" + "0000", out: "0403aabbcc"},
		{name: "constructed-octets-definite", in: "2407" + "0402aabb" + "0401cc", out: "0403aabbcc"},
		{name: "constructed-octets-nested", in: "2480" + "2480" + "0401aa" + "0000" + "0401bb" + "0000", out: "0402aabb"},
		{name: "implicit-context-kept", in: "a080" + "0401aa" + "0401bb" + "0000", out: "a0060401aa0401bb"},
		{name: "long-form-minimised", in: "048103aabbcc", out: "0403aabbcc"},
		{name: "long-content", in: "2480" + "0481c8" + long + "0000", out: "0481c8" + long},
		{name: "high-tag", in: "bf8100" + "00", out: "bf810000"},
		{name: "trailing-zeros", in: "30000000", out: "3000"},
		{name: "high-tag-form-for-low-number", in: "3f0400", wantErr: true},
		{name: "high-tag-non-minimal", in: "bf800100", wantErr: true},
		{name: "empty", in: "", wantErr: true},
		{name: "trailing-junk", in: "300001", wantErr: true},
		{name: "truncated-content", in: "3005020101", wantErr: true},
		{name: "missing-eoc", in: "3080020101", wantErr: true},
		{name: "primitive-indefinite", in: "0480aa0000", wantErr: true},
		{name: "length-ff", in: "30ff", wantErr: true},
		{name: "length-too-many-octets", in: "3085010000000000", wantErr: true},
		{name: "long-length-past-end", in: "308201000000", wantErr: true},
		{name: "constructed-bitstring", in: "2380030200aa0000", wantErr: true},
		{name: "mixed-string-segments", in: "24800c01610000", wantErr: true},
		{name: "constructed-segment-inside-string", in: "2480" + "3000" + "0000", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in, _ := hex.DecodeString(tc.in)
			got, err := ToDER(in)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ToDER(%s) = %x, want error", tc.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ToDER(%s): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.out, hex.EncodeToString(got)); diff != "" {
				t.Errorf("ToDER(%s) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestToDERDepthLimit(t *testing.T) {
	var b bytes.Buffer
	for i := 0; i < maxBERDepth+2; i++ {
		b.WriteString("\x30\x80")
	}
	for i := 0; i < maxBERDepth+2; i++ {
		b.WriteString("\x00\x00")
	}
	if _, err := ToDER(b.Bytes()); err == nil {
		t.Error("deep nesting accepted")
	}
}
