package mime

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	stdmime "mime"
	"strings"
)

// Media types of the cryptographic MIME structures (RFC 3156, RFC 8551).
const (
	ProtocolPGPSignature   = "application/pgp-signature"
	ProtocolPGPEncrypted   = "application/pgp-encrypted"
	ProtocolPKCS7Signature = "application/pkcs7-signature"
)

// SignedContentType returns the Content-Type of a multipart/signed entity.
func SignedContentType(protocol, micalg, boundary string) string {
	return stdmime.FormatMediaType("multipart/signed", map[string]string{
		"protocol": protocol, "micalg": micalg, "boundary": boundary,
	})
}

// EncryptedContentType returns the Content-Type of an RFC 3156
// multipart/encrypted entity.
func EncryptedContentType(boundary string) string {
	return stdmime.FormatMediaType("multipart/encrypted", map[string]string{
		"protocol": ProtocolPGPEncrypted, "boundary": boundary,
	})
}

// EnvelopedContentType is the Content-Type of an S/MIME enveloped entity.
const EnvelopedContentType = `application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"`

// WriteMultipartSigned writes the body of a multipart/signed entity: the
// signed entity exactly as given (canonical header and body, which the
// signature covers) and a signature part with sigHeader and sigBody (CRLF
// text, written unchanged).
func WriteMultipartSigned(w io.Writer, boundary string, entity io.Reader, sigHeader Header, sigBody io.Reader) error {
	if _, err := io.WriteString(w, "This is a digitally signed message in MIME format.\r\n\r\n--"+boundary+"\r\n"); err != nil {
		return fmt.Errorf("mime: build signed: %w", err)
	}
	if _, err := io.Copy(w, entity); err != nil {
		return fmt.Errorf("mime: build signed: %w", err)
	}
	if _, err := io.WriteString(w, "\r\n--"+boundary+"\r\n"); err != nil {
		return fmt.Errorf("mime: build signed: %w", err)
	}
	if _, err := sigHeader.WriteTo(w); err != nil {
		return fmt.Errorf("mime: build signed: %w", err)
	}
	if err := writeText(w, sigBody); err != nil {
		return fmt.Errorf("mime: build signed: %w", err)
	}
	if _, err := io.WriteString(w, "--"+boundary+"--\r\n"); err != nil {
		return fmt.Errorf("mime: build signed: %w", err)
	}
	return nil
}

// PGPSignatureHeader is the header of the signature part of PGP/MIME.
func PGPSignatureHeader() Header {
	return Header{
		{Name: "Content-Type", Value: `application/pgp-signature; name="signature.asc"`},
		{Name: "Content-Description", Value: "OpenPGP digital signature"},
		{Name: "Content-Disposition", Value: `attachment; filename="signature.asc"`},
	}
}

// SMIMESignatureHeader is the header of the signature part of S/MIME.
func SMIMESignatureHeader() Header {
	return Header{
		{Name: "Content-Type", Value: `application/pkcs7-signature; name="smime.p7s"`},
		{Name: "Content-Transfer-Encoding", Value: "base64"},
		{Name: "Content-Disposition", Value: `attachment; filename="smime.p7s"`},
		{Name: "Content-Description", Value: "S/MIME Cryptographic Signature"},
	}
}

// WritePGPEncrypted writes the body of an RFC 3156 multipart/encrypted
// entity around an armored OpenPGP message (line ends are made CRLF).
func WritePGPEncrypted(w io.Writer, boundary string, armored io.Reader) error {
	head := "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n" +
		"--" + boundary + "\r\n" +
		"Content-Type: application/pgp-encrypted\r\n" +
		"Content-Description: PGP/MIME version identification\r\n" +
		"\r\n" +
		"Version: 1\r\n" +
		"\r\n" +
		"--" + boundary + "\r\n" +
		"Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n" +
		"Content-Description: OpenPGP encrypted message\r\n" +
		"Content-Disposition: inline; filename=\"encrypted.asc\"\r\n" +
		"\r\n"
	if _, err := io.WriteString(w, head); err != nil {
		return fmt.Errorf("mime: build encrypted: %w", err)
	}
	if err := writeText(w, armored); err != nil {
		return fmt.Errorf("mime: build encrypted: %w", err)
	}
	if _, err := io.WriteString(w, "--"+boundary+"--\r\n"); err != nil {
		return fmt.Errorf("mime: build encrypted: %w", err)
	}
	return nil
}

// writeText copies r as CRLF text ending in a line break.
type lastByteWriter struct {
	w    io.Writer
	last byte
}

func (l *lastByteWriter) Write(p []byte) (int, error) {
	if len(p) > 0 {
		l.last = p[len(p)-1]
	}
	return l.w.Write(p)
}

func writeText(w io.Writer, r io.Reader) error {
	lw := &lastByteWriter{w: w, last: '\n'}
	cw := NewCRLFWriter(lw)
	if _, err := io.Copy(cw, r); err != nil {
		return err
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if lw.last != '\n' {
		_, err := io.WriteString(w, "\r\n")
		return err
	}
	return nil
}

// WriteBase64 writes data base64-encoded in 76-character CRLF lines.
func WriteBase64(out io.Writer, data []byte) error {
	w := bufio.NewWriterSize(out, 32<<10)
	var line [78]byte
	line[76], line[77] = '\r', '\n'
	for len(data) > 0 {
		n := min(57, len(data))
		k := base64.StdEncoding.EncodedLen(n)
		base64.StdEncoding.Encode(line[:k], data[:n])
		if k < 76 {
			line[k], line[k+1] = '\r', '\n'
		}
		if _, err := w.Write(line[:k+2]); err != nil {
			return err
		}
		line[76], line[77] = '\r', '\n'
		data = data[n:]
	}
	return w.Flush()
}

// AddParam returns the Content-Type value v with parameter name=value set.
func AddParam(v, name, value string) string {
	mt, params, err := stdmime.ParseMediaType(v)
	if err != nil || v == "" {
		// Keep what cannot be parsed as it is.
		if v == "" {
			v = "text/plain; charset=us-ascii"
		}
		return strings.TrimRight(v, "; \t") + "; " + name + "=\"" + value + "\""
	}
	params[name] = value
	return stdmime.FormatMediaType(mt, params)
}
