package mime

import (
	"bytes"
	"mime/quotedprintable"
)

// EncodeTextBody returns text (CRLF line ends) ready for a body, with its
// Content-Transfer-Encoding: unchanged and "7bit" when it is short-lined
// ASCII, else quoted-printable.
func EncodeTextBody(text []byte) ([]byte, string) {
	plain := true
	for _, line := range bytes.Split(text, []byte("\r\n")) {
		if len(line) > 900 {
			plain = false
			break
		}
		for _, c := range line {
			if c >= 0x80 || c == 0 || c == '\r' || c == '\n' {
				plain = false
				break
			}
		}
	}
	if plain {
		return text, "7bit"
	}
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	w.Write(text)
	w.Close()
	return b.Bytes(), "quoted-printable"
}
