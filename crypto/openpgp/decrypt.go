package openpgp

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"

	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// Plaintext is the verified content of a decrypted or inline-signed
// message, held in a spool buffer: in memory up to the threshold of
// Limits.Spool, beyond it (or always, without Limits.Spool) in an unlinked
// 0600 file in the spool directory. It exists only once the whole message
// was read, the integrity check passed and the signatures were checked.
// Close releases the spool.
type Plaintext struct {
	// Size is the number of plaintext bytes.
	Size int64
	// Signature is the verdict on the embedded signatures (StatusNone when
	// there were none).
	Signature SigResult
	// DecryptedWith is the uppercase hex fingerprint of the primary key of
	// the gateway key that decrypted the message ("" for VerifyInline).
	DecryptedWith string
	// Filename is the literal data packet's file name, sanitized (no path,
	// no control characters, at most 255 bytes); often empty.
	Filename string
	// Binary reports the literal data format 'b' (else text, 't' or 'u').
	Binary bool

	buf *spool.Buffer
}

// Open returns a reader over the whole plaintext. Several readers may be
// open at once; each must be closed. Open fails after Close.
func (p *Plaintext) Open() (io.ReadCloser, error) {
	if p.buf == nil {
		return nil, errors.New("openpgp: plaintext is closed")
	}
	return io.NopCloser(p.buf.Reader()), nil
}

// ReadAt implements io.ReaderAt over the plaintext (Size bytes), so that
// it can be parsed where it is spooled. It fails after Close.
func (p *Plaintext) ReadAt(b []byte, off int64) (int, error) {
	if p.buf == nil {
		return 0, errors.New("openpgp: plaintext is closed")
	}
	return p.buf.ReadAt(b, off)
}

// Close releases the spooled plaintext (memory, or a file that has no
// name left, so closing it frees the data). It is safe to call more than
// once.
func (p *Plaintext) Close() error {
	if p.buf == nil {
		return nil
	}
	err := p.buf.Close()
	p.buf = nil
	return err
}

// recordingKeyRing hands the gateway keys to go-crypto and records which
// key IDs the message's PKESK packets named (0 for a hidden recipient).
type recordingKeyRing struct {
	el    openpgp.EntityList
	asked []uint64
}

func (k *recordingKeyRing) KeysById(id uint64) []openpgp.Key { return k.el.KeysById(id) }

func (k *recordingKeyRing) EntitiesById(id uint64) []*openpgp.Entity {
	k.asked = append(k.asked, id)
	return k.el.EntitiesById(id)
}

// forUs reports whether a recorded key ID is 0 or one of the gateway keys.
func (k *recordingKeyRing) forUs() bool {
	for _, id := range k.asked {
		if id == 0 || len(k.el.KeysById(id)) > 0 {
			return true
		}
	}
	return false
}

// errReader remembers the first error of the underlying reader, so that a
// local I/O failure is not reported as a decryption failure.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

// unarmor returns a reader over the binary packets of r: armored input
// (optionally preceded by other text) is decoded, binary input passes
// through. wantType is the armor type required.
func unarmor(r io.Reader, wantType string) (io.Reader, error) {
	br := bufio.NewReaderSize(r, 4096)
	for {
		b, err := br.Peek(1)
		if err != nil {
			return nil, ErrMalformed
		}
		if b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n' {
			br.ReadByte()
			continue
		}
		if b[0]&0x80 != 0 {
			return br, nil
		}
		break
	}
	// armor.Decode reads the header lines from br itself (bufio gives it
	// br back, being big enough), so br is then at the body, which
	// armorBody decodes faster than blk.Body would.
	blk, err := armor.Decode(br)
	if err != nil || blk.Type != wantType {
		return nil, ErrMalformed
	}
	return newArmorBody(br), nil
}

// Decrypt decrypts an OpenPGP message (armored or binary) with the gateway
// keys and verifies its embedded signatures against verify at time now.
//
// The plaintext is spooled and returned only after the whole message was
// read, the MDC/AEAD check passed and the signatures were checked.
// Messages without integrity protection (SED packets) are refused.
//
// Errors: ErrNotForUs when no PKESK names a gateway key and none is
// hidden (key ID 0; hidden recipients are tried with every gateway key);
// ErrNotEncrypted for a message that is only signed; otherwise every
// failure is ErrDecrypt, except local I/O errors (reading r, writing the
// spool), which are returned wrapped and must lead to a temporary failure.
func Decrypt(r io.Reader, gateway *pgpcrypto.KeyRing, verify KeyLookup, now time.Time, lim Limits) (*Plaintext, error) {
	in := &errReader{r: r}
	body, err := unarmor(in, "PGP MESSAGE")
	if err != nil {
		if in.err != nil {
			return nil, fmt.Errorf("openpgp: read message: %w", in.err)
		}
		return nil, ErrDecrypt
	}
	kr := &recordingKeyRing{}
	if gateway != nil {
		for _, k := range gateway.GetKeys() {
			kr.el = append(kr.el, k.GetEntity())
		}
	}
	cfg := readConfig(now, lim)
	md, err := openpgp.ReadMessage(body, kr, nil, cfg)
	if err != nil {
		switch {
		case in.err != nil:
			return nil, fmt.Errorf("openpgp: read message: %w", in.err)
		case !kr.forUs() && isKeyIncorrect(err):
			return nil, ErrNotForUs
		}
		return nil, ErrDecrypt
	}
	if !md.IsEncrypted {
		return nil, ErrNotEncrypted
	}
	if md.DecryptedWith.Entity == nil {
		// Decrypted with a passphrase (no prompt is given, so this cannot
		// happen); refuse rather than guess.
		return nil, ErrDecrypt
	}
	recipient := md.DecryptedWith.Entity.PrimaryKey.Fingerprint
	pt, err := spoolVerified(md, in, verify, now, lim, recipient)
	if err != nil {
		var ioErr *spoolError
		if errors.As(err, &ioErr) {
			return nil, err
		}
		return nil, ErrDecrypt
	}
	pt.DecryptedWith = fingerprintHex(recipient)
	return pt, nil
}

func isKeyIncorrect(err error) bool { return errors.Is(err, pgperrors.ErrKeyIncorrect) }

// VerifyInline reads an armored or binary OpenPGP message that is signed
// (one-pass or old style, compressed or not) but not encrypted, verifies
// its signatures against verify at time now and returns the literal data,
// spooled like Decrypt's. An unsigned literal message gives StatusNone.
// Errors: ErrMalformed for anything that is not such a message (including
// encrypted ones), ErrTooLarge beyond lim.MaxDecompressed, wrapped local
// I/O errors otherwise.
func VerifyInline(r io.Reader, verify KeyLookup, now time.Time, lim Limits) (*Plaintext, error) {
	in := &errReader{r: r}
	body, err := unarmor(in, "PGP MESSAGE")
	if err != nil {
		if in.err != nil {
			return nil, fmt.Errorf("openpgp: read message: %w", in.err)
		}
		return nil, ErrMalformed
	}
	cfg := readConfig(now, lim)
	md, err := openpgp.ReadMessage(body, openpgp.EntityList(nil), nil, cfg)
	if err != nil || md.IsEncrypted {
		if in.err != nil {
			return nil, fmt.Errorf("openpgp: read message: %w", in.err)
		}
		return nil, ErrMalformed
	}
	pt, err := spoolVerified(md, in, verify, now, lim, nil)
	if err != nil {
		var ioErr *spoolError
		switch {
		case errors.As(err, &ioErr):
			return nil, err
		case errors.Is(err, ErrTooLarge):
			return nil, ErrTooLarge
		}
		return nil, ErrMalformed
	}
	return pt, nil
}

func readConfig(now time.Time, lim Limits) *packet.Config {
	maxDec := lim.maxDecompressed()
	strict := true
	noRecipCheck := false
	return &packet.Config{
		Time:                       func() time.Time { return now },
		MaxDecompressedMessageSize: &maxDec,
		CheckPacketSequence:        &strict,
		CheckIntendedRecipients:    &noRecipCheck, // checked by sigCheck
	}
}

// spoolError marks a local I/O failure (spool file or input reader).
type spoolError struct{ err error }

func (e *spoolError) Error() string { return "openpgp: spool plaintext: " + e.err.Error() }
func (e *spoolError) Unwrap() error { return e.err }

// spoolVerified copies md's body to a spool buffer while hashing it
// for every signature candidate, and judges the signatures once the body
// reached a clean EOF (which go-crypto gives only after the integrity
// check). On any error the buffer is released and nothing remains.
func spoolVerified(md *openpgp.MessageDetails, in *errReader, verify KeyLookup, now time.Time, lim Limits, recipientFpr []byte) (pt *Plaintext, err error) {
	buf, err := lim.newBuffer()
	if err != nil {
		return nil, &spoolError{err}
	}
	defer func() {
		if err != nil {
			buf.Close()
		}
	}()

	// One check per signature candidate, in packet order. go-crypto keeps
	// SignatureCandidates in the order their signature packets follow the
	// data; each gets its own hash.
	candidates := md.SignatureCandidates
	if len(candidates) > maxSignatures {
		return nil, errors.New("openpgp: too many signatures")
	}
	checks := make([]*sigCheck, len(candidates))
	var hashWriters []io.Writer
	for i, c := range candidates {
		checks[i] = newSigCheck(c.HashAlgorithm, c.SigType, c.IssuerKeyId, c.IssuerFingerprint, c.Salt, verify, false)
		hashWriters = append(hashWriters, checks[i].writers()...)
	}

	max := lim.maxDecompressed()
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	chunk := *bp
	var n int64
	for {
		m, rerr := md.UnverifiedBody.Read(chunk)
		if m > 0 {
			n += int64(m)
			if n > max {
				return nil, ErrTooLarge
			}
			if _, werr := buf.Write(chunk[:m]); werr != nil {
				return nil, &spoolError{werr}
			}
			for _, h := range hashWriters {
				h.Write(chunk[:m])
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			switch {
			case in.err != nil:
				return nil, &spoolError{in.err}
			case errors.Is(rerr, pgperrors.ErrMessageTooLarge):
				return nil, ErrTooLarge
			}
			return nil, fmt.Errorf("openpgp: read body: %w", rerr)
		}
	}
	// EOF from go-crypto: MDC/AEAD verified, trailing signatures parsed.
	if !md.IsVerified && md.IsSigned {
		return nil, errors.New("openpgp: signatures not read")
	}
	pt = &Plaintext{Size: n, buf: buf}
	if md.LiteralData != nil {
		pt.Filename = sanitizeFilename(md.LiteralData.FileName)
		pt.Binary = md.LiteralData.IsBinary
	}
	if md.IsSigned {
		results := make([]SigResult, len(candidates))
		for i, c := range candidates {
			results[i] = checks[i].result(c.CorrespondingSig, now, recipientFpr)
		}
		pt.Signature = best(results)
	}
	return pt, nil
}

// sanitizeFilename keeps the last path element of a literal-data file name
// and drops control and format characters; "" when nothing useful is left.
func sanitizeFilename(s string) string {
	if i := strings.LastIndexAny(s, `/\`); i >= 0 {
		s = s[i+1:]
	}
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return -1
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if s == "." || s == ".." || s == "_CONSOLE" {
		return ""
	}
	for len(s) > 255 {
		r := []rune(s)
		s = string(r[:len(r)-1])
	}
	return s
}
