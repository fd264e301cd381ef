package main

import (
	"bytes"
	"crypto/x509"
	encasn1 "encoding/asn1"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
	"github.com/cryptmilter/cryptmilter/crypto/smime"
	"github.com/cryptmilter/cryptmilter/internal/ber"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// viewer turns an outbound copy into its view: the message as it is,
// except that every cryptographic layer is opened the way its recipients
// open it (with their own secret keys, testdata/golden/peers, and the
// project's OpenPGP and S/MIME code) and shown as a line in braces that
// says who it is encrypted to, who can decrypt it and whose signature it
// carries with what verdict, followed by what it holds; random MIME
// boundaries are numbered. Ciphertext and signature bytes, which differ
// on every run, are not shown; everything else is, so that the view
// changes exactly when a copy's structure, recipients (Bcc privacy: which
// keys each copy is encrypted to), headers or content do.
type viewer struct {
	keys *keystore.Snapshot
	// pgp are the secret keys that may open a copy: each
	// correspondent's, and the gateway's (named by address).
	pgp []namedRing
	// smime are the S/MIME identities that may open a copy.
	smime []namedIdentity
	roots *x509.CertPool
	spool string
}

type namedRing struct {
	name string
	ring *pgpcrypto.KeyRing
}

type namedIdentity struct {
	name string
	id   smime.Identity
}

func newViewer(t *testing.T, ks, peers string) *viewer {
	t.Helper()
	snap, err := keystore.Load(keystore.Options{Dir: ks})
	if err != nil {
		t.Fatal(err)
	}
	v := &viewer{keys: snap, roots: x509.NewCertPool(), spool: t.TempDir()}
	v.pgp = append(v.pgp, namedRing{"rt@example.org", snap.GatewayDecryptionKeyRing()})
	for _, id := range snap.GatewaySMIMEAll() {
		v.smime = append(v.smime, namedIdentity{"rt@example.org", smime.Identity{Cert: id.Cert, Key: id.Key}})
	}
	files, err := filepath.Glob(filepath.Join(peers, "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(f, ".asc"):
			k, err := pgpcrypto.NewKeyFromArmored(string(data))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			ring, err := pgpcrypto.NewKeyRing(k)
			if err != nil {
				t.Fatal(err)
			}
			v.pgp = append(v.pgp, namedRing{keyAddress(k), ring})
		case filepath.Base(f) == "golden-ca.pem":
			if !v.roots.AppendCertsFromPEM(data) {
				t.Fatalf("%s: no certificate", f)
			}
		case strings.HasSuffix(f, ".pem"):
			id, err := pemIdentity(data)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			v.smime = append(v.smime, namedIdentity{smime.AddressesOf(id.Cert)[0], id})
		}
	}
	return v
}

func keyAddress(k *pgpcrypto.Key) string {
	for _, id := range k.GetEntity().Identities {
		if id.UserId != nil && id.UserId.Email != "" {
			return id.UserId.Email
		}
	}
	return k.GetFingerprint()
}

// pemIdentity reads a PEM private key and its certificate.
func pemIdentity(data []byte) (smime.Identity, error) {
	var id smime.Identity
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch b.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return id, err
			}
			id.Key = k
		case "CERTIFICATE":
			if id.Cert != nil {
				continue
			}
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return id, err
			}
			id.Cert = c
		}
	}
	if id.Key == nil || id.Cert == nil {
		return id, fmt.Errorf("want a private key and its certificate")
	}
	return id, nil
}

// lookup finds signer keys in the keystore (the gateway's among them).
func (v *viewer) ByKeyID(id uint64) []*pgpcrypto.Key { return v.keys.OpenPGPByKeyID(id) }

// keyName names an OpenPGP key ID by the address of the key holding it.
func (v *viewer) keyName(id uint64) string {
	if id == 0 {
		return "hidden recipient"
	}
	for _, r := range v.pgp {
		for _, k := range r.ring.GetKeys() {
			if holdsKeyID(k, id) {
				return r.name
			}
		}
	}
	for _, k := range v.keys.OpenPGPByKeyID(id) {
		return keyAddress(k)
	}
	return fmt.Sprintf("unknown key %016X", id)
}

func holdsKeyID(k *pgpcrypto.Key, id uint64) bool {
	e := k.GetEntity()
	if e.PrimaryKey.KeyId == id {
		return true
	}
	for _, s := range e.Subkeys {
		if s.PublicKey.KeyId == id {
			return true
		}
	}
	return false
}

// message returns the view of a whole copy (LF line ends).
func (v *viewer) message(t *testing.T, raw []byte) string {
	t.Helper()
	var b bytes.Buffer
	v.raw(&b, toCRLFBytes(raw))
	return normalizeBoundaries(strings.ReplaceAll(b.String(), "\r\n", "\n"))
}

// raw writes the view of an entity given as bytes.
func (v *viewer) raw(b *bytes.Buffer, data []byte) {
	e, err := mime.Parse(data, mime.Limits{MaxDepth: 50, MaxParts: 5000})
	if err != nil {
		fmt.Fprintf(b, "{unparsable MIME: %v}\r\n", err)
		b.Write(data)
		return
	}
	v.entity(b, e)
}

// entity writes e's header as it is and the view of its body.
func (v *viewer) entity(b *bytes.Buffer, e *mime.Entity) {
	if !bytes.HasSuffix(rawOf(e), bodyOf(e)) {
		fmt.Fprintf(b, "{entity whose body is not at the end of its bytes}\r\n")
		b.Write(rawOf(e))
		return
	}
	b.Write(rawOf(e)[:len(rawOf(e))-len(bodyOf(e))])
	v.body(b, e)
}

func (v *viewer) body(b *bytes.Buffer, e *mime.Entity) {
	proto := strings.ToLower(e.Params["protocol"])
	switch {
	case e.MediaType == "multipart/encrypted" && proto == "application/pgp-encrypted" && len(e.Parts) == 2:
		v.parts(b, e, func(i int, p *mime.Entity) bool {
			if i != 1 {
				return false
			}
			b.Write(rawOf(p)[:len(rawOf(p))-len(bodyOf(p))])
			data, err := decodedOf(p)
			if err != nil {
				fmt.Fprintf(b, "{undecodable ciphertext part: %v}\r\n", err)
				return true
			}
			v.pgpMessage(b, data, true)
			return true
		})
	case e.MediaType == "multipart/signed" && len(e.Parts) == 2:
		sig := v.signature(e)
		v.parts(b, e, func(i int, p *mime.Entity) bool {
			if i != 1 {
				return false
			}
			b.Write(rawOf(p)[:len(rawOf(p))-len(bodyOf(p))])
			b.WriteString(sig + "\r\n")
			return true
		})
	case (e.MediaType == "application/pkcs7-mime" || e.MediaType == "application/x-pkcs7-mime") &&
		strings.EqualFold(e.Params["smime-type"], "enveloped-data"):
		der, err := decodedOf(e)
		if err != nil {
			fmt.Fprintf(b, "{undecodable enveloped data: %v}\r\n", err)
			return
		}
		v.smimeEnveloped(b, der)
	case e.MediaType == "text/plain" && bytes.Contains(bodyOf(e), []byte("-----BEGIN PGP MESSAGE-----")):
		data, err := decodedOf(e)
		if err != nil {
			fmt.Fprintf(b, "{undecodable text: %v}\r\n", err)
			return
		}
		v.pgpMessage(b, data, false)
	case e.IsMultipart() || e.MediaType == "message/rfc822":
		v.parts(b, e, func(int, *mime.Entity) bool { return false })
	default:
		b.Write(bodyOf(e))
	}
}

// parts writes a multipart (or message/rfc822) body: delimiters, preamble
// and epilogue as they are, each part by its view (or by special when it
// returns true).
func (v *viewer) parts(b *bytes.Buffer, e *mime.Entity, special func(int, *mime.Entity) bool) {
	rest := bodyOf(e)
	for i, p := range e.Parts {
		j := bytes.Index(rest, rawOf(p))
		if j < 0 {
			fmt.Fprintf(b, "{part %d not found in its parent}\r\n", i+1)
			b.Write(rest)
			return
		}
		b.Write(rest[:j])
		if !special(i, p) {
			v.entity(b, p)
		}
		rest = rest[j+len(rawOf(p)):]
	}
	b.Write(rest)
}

// pgpMessage writes the view of an OpenPGP message: recipients, who can
// decrypt it and its signature, then the plaintext (a MIME entity for
// PGP/MIME, text for inline PGP).
func (v *viewer) pgpMessage(b *bytes.Buffer, data []byte, isMIME bool) {
	info, err := openpgp.Inspect(data)
	if err != nil || info.Kind != openpgp.KindEncrypted {
		fmt.Fprintf(b, "{not an encrypted OpenPGP message (%v, %v); as it is:}\r\n", info.Kind, err)
		b.Write(toCRLFBytes(data))
		return
	}
	var to []string
	for _, id := range info.Recipients {
		to = append(to, v.keyName(id))
	}
	slices.Sort(to)
	var can []string
	var plain []byte
	var sig openpgp.SigResult
	for _, r := range v.pgp {
		pt, err := openpgp.Decrypt(bytes.NewReader(data), r.ring, v, time.Now(), openpgp.Limits{SpoolDir: v.spool})
		if err != nil {
			continue
		}
		can = append(can, r.name)
		if plain == nil {
			if rc, err := pt.Open(); err == nil {
				plain, _ = io.ReadAll(rc)
				rc.Close()
			}
			sig = pt.Signature
		}
		pt.Close()
	}
	slices.Sort(can)
	fmt.Fprintf(b, "{openpgp message: encrypted to %s; opens with %s; signature %s}\r\n",
		orNone(to), orNone(can), pgpVerdict(v, sig))
	if plain == nil {
		return
	}
	b.WriteString("{plaintext}\r\n")
	if isMIME {
		v.raw(b, toCRLFBytes(plain))
	} else {
		b.Write(toCRLFBytes(plain))
	}
	b.WriteString("\r\n{end of plaintext}\r\n")
}

func orNone(l []string) string {
	if len(l) == 0 {
		return "nobody"
	}
	return strings.Join(l, ", ")
}

// pgpVerdict describes an OpenPGP signature verdict.
func pgpVerdict(v *viewer, r openpgp.SigResult) string {
	if r.Status == openpgp.StatusNone {
		return "none"
	}
	who := v.keyName(r.KeyID)
	s := fmt.Sprintf("%s by %s (%s)", r.Status, who, r.HashAlgo)
	if r.Reason != "" {
		s += ", " + r.Reason
	}
	return s
}

// signature verifies a multipart/signed entity's signature over its
// first part and describes the verdict.
func (v *viewer) signature(e *mime.Entity) string {
	sig, err := decodedOf(e.Parts[1])
	if err != nil {
		return fmt.Sprintf("{undecodable signature: %v}", err)
	}
	signed := toCRLFBytes(rawOf(e.Parts[0]))
	switch strings.ToLower(e.Params["protocol"]) {
	case "application/pgp-signature":
		r := openpgp.VerifyDetached(bytes.NewReader(signed), sig, v, time.Now())
		return fmt.Sprintf("{openpgp signature (micalg=%s): %s}", e.Params["micalg"], pgpVerdict(v, r))
	case "application/pkcs7-signature", "application/x-pkcs7-signature":
		_, signers, err := smime.Verify(sig, signed, smime.VerifyOptions{Roots: v.roots, Now: time.Now()})
		if err != nil {
			return fmt.Sprintf("{smime signature: %v}", err)
		}
		var l []string
		for _, s := range signers {
			d := fmt.Sprintf("%v by %s", s.Status, strings.Join(s.Addresses, ","))
			if s.Reason != "" {
				d += ", " + s.Reason
			}
			l = append(l, d)
		}
		return fmt.Sprintf("{smime signature (micalg=%s): %s}", e.Params["micalg"], orNone(l))
	}
	return "{signature of an unknown protocol}"
}

// smimeEnveloped writes the view of CMS enveloped data: who can decrypt
// it, with which algorithms, then the content.
func (v *viewer) smimeEnveloped(b *bytes.Buffer, der []byte) {
	var can []string
	var content []byte
	var info smime.DecryptInfo
	for _, n := range v.smime {
		c, in, err := smime.Decrypt(der, []smime.Identity{n.id})
		if err != nil {
			continue
		}
		can = append(can, n.name)
		if content == nil {
			content, info = c, in
		}
	}
	slices.Sort(can)
	fmt.Fprintf(b, "{smime enveloped data: encrypted to %s; opens with %s; %s, %s}\r\n",
		orNone(v.cmsRecipients(der)), orNone(can), info.ContentAlgorithm, info.KeyAlgorithm)
	if content == nil {
		return
	}
	b.WriteString("{plaintext}\r\n")
	v.raw(b, toCRLFBytes(content))
	b.WriteString("\r\n{end of plaintext}\r\n")
}

// cmsRecipients names the recipientInfos of CMS (Auth)EnvelopedData by
// the address of the certificate each identifies (issuer and serial
// number), so that a view shows every key a copy is encrypted to, not
// only those the test holds a key for.
func (v *viewer) cmsRecipients(berData []byte) []string {
	der, err := ber.ToDER(berData)
	if err != nil {
		return []string{"{unreadable: " + err.Error() + "}"}
	}
	bad := []string{"{unreadable recipientInfos}"}
	in := cryptobyte.String(der)
	var ci, content, env, ris cryptobyte.String
	var oid encasn1.ObjectIdentifier
	var version int
	if !in.ReadASN1(&ci, casn1.SEQUENCE) || !ci.ReadASN1ObjectIdentifier(&oid) ||
		!ci.ReadASN1(&content, casn1.Tag(0).ContextSpecific().Constructed()) ||
		!content.ReadASN1(&env, casn1.SEQUENCE) || !env.ReadASN1Integer(&version) {
		return bad
	}
	env.SkipOptionalASN1(casn1.Tag(0).ContextSpecific().Constructed()) // originatorInfo
	if !env.ReadASN1(&ris, casn1.SET) {
		return bad
	}
	var out []string
	for !ris.Empty() {
		var ri, iasn cryptobyte.String
		var riVersion int
		if !ris.ReadASN1(&ri, casn1.SEQUENCE) || !ri.ReadASN1Integer(&riVersion) {
			return bad
		}
		if !ri.ReadASN1(&iasn, casn1.SEQUENCE) {
			out = append(out, "a recipient by subject key identifier")
			continue
		}
		var issuer cryptobyte.String
		serial := new(big.Int)
		if !iasn.ReadASN1Element(&issuer, casn1.SEQUENCE) || !iasn.ReadASN1Integer(serial) {
			return bad
		}
		out = append(out, v.certName(issuer, serial))
	}
	slices.Sort(out)
	return out
}

// certName names a certificate by issuer and serial number.
func (v *viewer) certName(issuer []byte, serial *big.Int) string {
	for _, n := range v.smime {
		if bytes.Equal(n.id.Cert.RawIssuer, issuer) && n.id.Cert.SerialNumber.Cmp(serial) == 0 {
			return n.name
		}
	}
	return fmt.Sprintf("unknown certificate %X", serial)
}

// toCRLFBytes makes every line end CRLF.
func toCRLFBytes(b []byte) []byte {
	lf := bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))
}

// rawOf, bodyOf and decodedOf read an entity's bytes, raw body and decoded
// body whole (the views are of small test messages).
func rawOf(e *mime.Entity) []byte {
	b, _ := io.ReadAll(e.Raw())
	return b
}

func bodyOf(e *mime.Entity) []byte {
	b, _ := io.ReadAll(e.Body())
	return b
}

func decodedOf(e *mime.Entity) ([]byte, error) { return io.ReadAll(e.Decoded()) }
