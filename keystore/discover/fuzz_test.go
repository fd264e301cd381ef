package discover

import (
	"testing"
	"time"
)

// FuzzRecord: a cache file is read as untrusted (an admin may edit it): it
// never makes a Found answer without a checked key.
func FuzzRecord(f *testing.F) {
	f.Add([]byte(`{"version":1,"address":"a@example.net","source":"wkd","status":"found","openpgp":{"fingerprint":"AB","data":"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n-----END PGP PUBLIC KEY BLOCK-----\n"}}`))
	f.Add([]byte(`{"version":1,"address":"a@example.net","source":"dane","status":"found","smime":{"fingerprint":"AB","smimea_usage":1,"data":"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"}}`))
	f.Add([]byte(`{"version":1,"address":"a@example.net","source":"wkd","status":"none","expires":"2030-01-01T00:00:00Z"}`))
	d := New(Options{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseRecord(data)
		if err != nil {
			return
		}
		a := d.fromRecord(r, "a@example.net", time.Now())
		if a.Status == Found && a.OpenPGP == nil && a.SMIME == nil {
			t.Fatalf("found without a key: %+v", a)
		}
		if a.OpenPGP != nil && a.OpenPGP.OpenPGP == nil || a.SMIME != nil && a.SMIME.Cert == nil {
			t.Fatalf("a key without material: %+v", a)
		}
	})
}
