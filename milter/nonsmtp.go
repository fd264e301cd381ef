package milter

import (
	"log/slog"
	"net"

	"github.com/cryptmilter/cryptmilter/crypto"
)

// postfixNonSMTP reports whether a milter connection is Postfix's
// emulation of an SMTP session for mail from the sendmail command:
// cleanup connects as "localhost" [127.0.0.1] port 0 over inet (and says
// HELO localhost). No TCP client has port 0, and a unix-socket smtpd
// reports family unknown, so an SMTP client cannot look like this; but it
// is a detail of Postfix's emulation, not a setting, so it only serves to
// warn, never to decide the direction (README, Direction).
func postfixNonSMTP(host, family string, port uint16, addr net.IP) bool {
	return port == 0 && host == "localhost" && family == "tcp4" && addr.Equal(net.IPv4(127, 0, 0, 1))
}

// warnNonSMTPInbound logs, for mail that looks like it came from Postfix's
// sendmail command but is inbound, that it will not be signed or
// encrypted and how to mark it: most often the cleanup-ns setting is
// missing, and local applications' mail would leave in plaintext.
func warnNonSMTPInbound(log *slog.Logger, nonSMTP bool, dir crypto.Direction, qid string) {
	if !nonSMTP || dir != crypto.Inbound {
		return
	}
	log.Warn("mail from Postfix's sendmail command treated as inbound: it is not signed or encrypted",
		"queue_id", qid,
		"hint", "mark it outbound: master.cf pickup -o cleanup_service_name=cleanup-ns, cleanup-ns -o milter_macro_daemon_name=ORIGINATING (README: Direction)")
}
