package crypto

// RFC 9788 names the choice of outer header fields of an encrypted
// message its Header Confidentiality Policy. With [outbound]
// header_confidentiality = true (the default) encrypted copies follow
// hcp_baseline: the outer Subject becomes "[...]" and Keywords and
// Comments are removed. With false they follow hcp_no_confidentiality:
// the outer header stays as sent, and the signed inner header still
// carries every protected field and the HP-Outer record of the outer
// ones. Ticket systems need the latter: a reply from a client without
// RFC 9788 support quotes the outer Subject, and "Re: [...]" loses the
// "[example.org #7]" tag that threads it onto its ticket.

// hidesHeaders reports whether a copy's outer header is obscured: only
// for encrypted copies, with header protection and confidentiality on.
func (b *builder) hidesHeaders(encrypted bool) bool {
	return encrypted && b.e.pol.Outbound.ProtectHeaders && b.e.pol.Outbound.HeaderConfidentiality
}
