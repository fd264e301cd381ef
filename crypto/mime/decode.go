package mime

import (
	"encoding/base64"
	"errors"
	"io"
	"mime/quotedprintable"
	"strings"
)

// ErrTransferEncoding is matched (errors.Is) by the errors of a reader
// from NewTransferDecoder (and Entity.Decoded) when the body does not
// decode: damaged base64 or quoted-printable is a property of the message,
// told apart from an error reading the bytes, which is returned as it is.
var ErrTransferEncoding = errors.New("mime: body does not decode")

// decodeError is a body that does not decode in its transfer encoding.
type decodeError struct {
	enc string
	err error
}

func (e *decodeError) Error() string        { return "mime: " + e.enc + " body: " + e.err.Error() }
func (e *decodeError) Unwrap() error        { return e.err }
func (e *decodeError) Is(target error) bool { return target == ErrTransferEncoding }

// NewTransferDecoder returns a reader of r's content with the
// Content-Transfer-Encoding cte undone, decoding as it reads. Base64 is
// strict: line breaks, spaces and tabs are skipped and the padding may be
// left out, but any other byte outside the alphabet, or padding before
// more data, is an error. A body that does not decode gives an error
// matching ErrTransferEncoding; errors reading r are returned unchanged.
// Other encodings (7bit, 8bit, binary, unknown) pass r through.
func NewTransferDecoder(cte string, r io.Reader) io.Reader {
	switch enc := strings.ToLower(strings.TrimSpace(cte)); enc {
	case "base64":
		src := &sourceReader{r: r}
		return &decodingReader{enc: enc, src: src, r: base64.NewDecoder(base64.RawStdEncoding, &strictBase64{r: src})}
	case "quoted-printable":
		src := &sourceReader{r: r}
		return &decodingReader{enc: enc, src: src, r: quotedprintable.NewReader(src)}
	}
	return r
}

// sourceReader remembers the first error of the bytes being decoded, so
// that a read error is not taken for a decoding one.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

// decodingReader classifies the errors of a decoder.
type decodingReader struct {
	enc string
	src *sourceReader
	r   io.Reader
}

func (d *decodingReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	switch {
	case err == nil || err == io.EOF:
	case d.src.err != nil:
		err = d.src.err
	default:
		err = &decodeError{enc: d.enc, err: err}
	}
	return n, err
}

// strictBase64 passes base64 text on without its line breaks, spaces and
// tabs, and without padding at its very end, to a decoder for the
// unpadded alphabet: what remains is decoded strictly (as
// base64.RawStdEncoding.DecodeString would decode it). Padding followed
// by more data is passed on (one "=" is enough), so that the decoder
// refuses it.
type strictBase64 struct {
	r   io.Reader
	pad bool // "=" seen and not passed on
	eof bool
	buf []byte // filtered bytes not yet returned
	in  [4096]byte
	out [4096 + 1]byte
}

func (s *strictBase64) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		if s.eof {
			return 0, io.EOF // trailing padding is dropped
		}
		n, err := s.r.Read(s.in[:])
		out := s.out[:0]
		for _, c := range s.in[:n] {
			switch c {
			case '\r', '\n', ' ', '\t':
			case '=':
				s.pad = true
			default:
				if s.pad {
					out = append(out, '=')
					s.pad = false
				}
				out = append(out, c)
			}
		}
		s.buf = out
		if err == io.EOF {
			s.eof = true
		} else if err != nil {
			return 0, err
		}
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}
