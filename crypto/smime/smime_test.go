package smime

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"testing"
)

func TestAddressesOf(t *testing.T) {
	p := testPKI(t)
	tests := []struct {
		name string
		cert *x509.Certificate
		want []string
	}{
		{"san", p.alice.cert, []string{"alice@example.org"}},
		{"subject-email", p.subjOnly.cert, []string{"carol@example.org"}},
		{"none", p.root.cert, nil},
		{"nil", nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := AddressesOf(tc.cert)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("AddressesOf = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFormatSerialAndName(t *testing.T) {
	for _, tc := range []struct {
		n    *big.Int
		want string
	}{{big.NewInt(0x1e), "1E"}, {big.NewInt(0x100), "0100"}, {nil, ""}} {
		if got := formatSerial(tc.n); got != tc.want {
			t.Errorf("formatSerial(%v) = %q, want %q", tc.n, got, tc.want)
		}
	}
	name := pkix.Name{CommonName: "NSS Test CA (RSA)", Organization: []string{"BOGUS NSS"}}
	der, err := asn1.Marshal(name.ToRDNSequence())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := formatName(der), "CN=NSS Test CA (RSA),O=BOGUS NSS"; got != want {
		t.Errorf("formatName = %q, want %q", got, want)
	}
	if got := formatName([]byte{0x01}); got != "01" {
		t.Errorf("formatName(garbage) = %q, want hex", got)
	}
}
