package crypto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"unicode"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// A cleartext-signed block (RFC 4880 section 7) read as a stream: the
// signed text goes to a spool buffer a line at a time, as go-crypto's
// clearsign.Decode reads it from memory, and the signature block, which
// follows the text, is held (it is small) and verified over the spooled
// text as a detached signature (openpgp.VerifyDetached hashes CRLF text as
// it is, which is what a cleartext signature covers).

// Bounds on a cleartext-signed block. A line longer than maxClearLine
// (RFC 5322 allows 998 bytes) or a signature block longer than
// maxClearSig makes it malformed.
const (
	maxClearLine   = 1 << 20
	maxClearHeader = 64 << 10
	maxClearSig    = 2 << 20
)

// The lines clearsign.Decode looks for.
var (
	clearHashValues = []string{"MD5", "SHA1", "RIPEMD160", "SHA224", "SHA256", "SHA384", "SHA512", "SHA3-256", "SHA3-512"}
	errClearFormat  = errors.New("crypto: not a cleartext-signed block")
)

// clearBlock is what readCleartext found.
type clearBlock struct {
	// sig is the signature block, from its BEGIN line to the end of r
	// (without the white space there).
	sig []byte
	// sigAt is where the signature block starts in r.
	sigAt int64
}

// readCleartext reads from r a cleartext-signed block trimmed of the
// white space around it (armorKind's armorSigned) and writes the text it
// signs to text: dash-unescaped, trailing blanks removed from each line,
// CRLF line ends, no final line break. A block clearsign.Decode would not
// read is errClearFormat; other errors are r's or text's.
func readCleartext(r io.Reader, text io.Writer) (*clearBlock, error) {
	lr := &clearLines{br: bufio.NewReaderSize(r, 64<<10)}
	// The BEGIN line, alone on its line.
	l, _, err := lr.next(maxClearLine)
	if err != nil {
		return nil, err
	}
	if string(getLine(l)) != armorBeginSigned {
		return nil, errClearFormat
	}
	if err := lr.armorHeaders(); err != nil {
		return nil, err
	}
	// The text, up to the signature's BEGIN line.
	bw := bufio.NewWriterSize(text, 32<<10)
	first := true
	for {
		start := lr.pos
		l, eof, err := lr.next(maxClearLine)
		if err != nil {
			return nil, err
		}
		line := getLine(l)
		if len(l) == 0 && eof {
			return nil, errClearFormat // no signature
		}
		if string(line) == "-----BEGIN PGP SIGNATURE-----" {
			if err := bw.Flush(); err != nil {
				return nil, err
			}
			// The signature block: the rest of the block, without the
			// white space after it.
			sig, err := io.ReadAll(io.LimitReader(lr.br, maxClearSig))
			if err != nil {
				return nil, err
			}
			if len(l)+len(sig) >= maxClearSig {
				return nil, errClearFormat
			}
			sig = bytes.TrimRightFunc(append(slices.Clone(l), sig...), unicode.IsSpace)
			return &clearBlock{sig: sig, sigAt: start}, nil
		}
		if !first {
			bw.WriteString("\r\n")
		}
		first = false
		line = bytes.TrimPrefix(line, []byte("- "))
		bw.Write(bytes.TrimRight(line, " \t"))
		if eof {
			return nil, errClearFormat
		}
	}
}

// clearLines reads a cleartext-signed block a bounded line at a time,
// counting the bytes read.
type clearLines struct {
	br  *bufio.Reader
	pos int64
	buf []byte
}

// next returns the next line (its line end kept; valid until the next
// call) and whether the input ended with it.
func (lr *clearLines) next(max int) ([]byte, bool, error) {
	var err error
	lr.buf, err = readBoundedLine(lr.br, lr.buf[:0], max)
	lr.pos += int64(len(lr.buf))
	if err == io.EOF {
		return lr.buf, true, nil
	}
	return lr.buf, false, err
}

// armorHeaders reads the armor headers up to a blank line: only Hash,
// with known values.
func (lr *clearLines) armorHeaders() error {
	for headers := 0; ; {
		l, eof, err := lr.next(maxClearLine)
		if err != nil {
			return err
		}
		if len(l) == 0 && eof {
			return errClearFormat
		}
		if headers += len(l); headers > maxClearHeader {
			return errClearFormat
		}
		line := getLine(l)
		if len(strings.TrimSpace(string(line))) == 0 {
			return nil
		}
		if bytes.IndexFunc(line, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
			return errClearFormat
		}
		key, val, ok := strings.Cut(string(line), ":")
		if !ok || strings.TrimSpace(key) != "Hash" {
			return errClearFormat
		}
		for _, v := range strings.Split(val, ",") {
			if !slices.Contains(clearHashValues, strings.ToUpper(strings.TrimSpace(v))) {
				return errClearFormat
			}
		}
	}
}

// getLine is a line without its LF and the one CR before it, as
// clearsign.Decode cuts lines (a last line without LF keeps its CR).
func getLine(l []byte) []byte {
	if t, ok := bytes.CutSuffix(l, []byte("\n")); ok {
		return bytes.TrimSuffix(t, []byte("\r"))
	}
	return l
}

// readBoundedLine appends the next line of r (with its LF) to buf; a line
// longer than max is errClearFormat. At the end of r it returns what is
// left with io.EOF.
func readBoundedLine(r *bufio.Reader, buf []byte, max int) ([]byte, error) {
	for {
		frag, err := r.ReadSlice('\n')
		if len(buf)+len(frag) > max {
			return buf, errClearFormat
		}
		buf = append(buf, frag...)
		if err != bufio.ErrBufferFull {
			return buf, err
		}
	}
}

// clearSignature decodes the armored signature block of a cleartext-signed
// block: its binary packets (at most maxSigBytes of them, as
// openpgp.VerifyCleartext reads them).
func clearSignature(block []byte) ([]byte, error) {
	// clearsign.Decode takes the armor up to the first END line and the
	// line breaks after it.
	end := bytes.Index(block, []byte("\n-----END PGP SIGNATURE-----"))
	if end < 0 {
		return nil, errClearFormat
	}
	end += len("\n-----END PGP SIGNATURE-----")
	for end < len(block) && (block[end] == '\r' || block[end] == '\n') {
		end++
	}
	blk, err := armor.Decode(bytes.NewReader(block[:end]))
	if err != nil || blk.Type != "PGP SIGNATURE" {
		return nil, errClearFormat
	}
	sig, err := io.ReadAll(io.LimitReader(blk.Body, maxSignaturePart))
	if err != nil {
		return nil, errClearFormat
	}
	return sig, nil
}
