package openpgp

import (
	"bytes"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestInspect(t *testing.T) {
	f := getFixtures(t)
	gwIDs := func(id uint64) []uint64 { return []uint64{id} }
	encSub := f.gw25519.GetEntity().Subkeys[0].PublicKey.KeyId
	pubArmored := f.gpg.mustRun(t, nil, "--export", "--armor", f.senderUID)
	tests := []struct {
		name    string
		data    []byte
		want    Info
		wantErr error
	}{
		{"public key armored", pubArmored, Info{Kind: KindPublicKey, Armored: true}, nil},
		{"public key binary", f.gpg.mustRun(t, nil, "--export", f.senderUID), Info{Kind: KindPublicKey}, nil},
		{"secret key binary", f.gpg.mustRun(t, nil, "--export-secret-keys", f.gatewayUID), Info{Kind: KindSecretKey}, nil},
		{"encrypted binary", f.gpg.mustRun(t, eightBit, "--encrypt", "--recipient", f.gatewayUID), Info{Kind: KindEncrypted, Recipients: gwIDs(encSub)}, nil},
		{"encrypted hidden armored", f.gpg.mustRun(t, eightBit, "--encrypt", "--armor", "--hidden-recipient", f.gatewayUID), Info{Kind: KindEncrypted, Armored: true, Recipients: []uint64{0}, Hidden: true}, nil},
		{"symmetric", f.gpg.mustRun(t, eightBit, "--symmetric", "--passphrase", "x"), Info{Kind: KindEncrypted, Symmetric: true}, nil},
		{"surrounded key", append(append([]byte("see my key:\n"), pubArmored...), "\n-- \nsig\n"...), Info{Kind: KindPublicKey, Armored: true, Surrounded: true}, nil},
		{"empty", nil, Info{}, ErrMalformed},
		{"text", []byte("just some text\n"), Info{Armored: true}, ErrMalformed},
		{"unknown armor", []byte("-----BEGIN PGP FOO-----\n\nAAAA\n-----END PGP FOO-----\n"), Info{Armored: true}, ErrMalformed},
		{"truncated binary", []byte{0xc1, 0x40, 0x03}, Info{}, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Inspect(tc.data)
			if err != tc.wantErr {
				t.Errorf("error = %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Inspect (-want +got):\n%s", diff)
			}
		})
	}
	// Signed messages name their signer.
	signed := f.gpg.mustRun(t, eightBit, "--sign", "--armor", "--local-user", f.senderUID)
	info, err := Inspect(signed)
	if err != nil || info.Kind != KindSigned || len(info.Signers) != 1 || !bytes.Contains([]byte(f.senderFP), []byte(info.KeyIDsHex()[0])) {
		t.Errorf("Inspect(signed) = %+v, %v", info, err)
	}
}
