//go:build tools

package tools

import (
	_ "github.com/ProtonMail/gopenpgp/v3/crypto"
	_ "github.com/coreos/go-systemd/v22/activation"
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset"
	_ "github.com/emersion/go-message/textproto"
	_ "github.com/emersion/go-milter"
	_ "github.com/emersion/go-smtp"
	_ "github.com/fsnotify/fsnotify"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/rogpeppe/go-internal/testscript"
	_ "github.com/smallstep/pkcs7"
	_ "golang.org/x/crypto/cryptobyte"
)
