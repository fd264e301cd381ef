package keystore

// Counts returns the number of keys and certificates of the snapshot by
// kind, in the words of Entry.Kind (public, secret, certificate, identity,
// ca) plus "crl" for revocation lists. It parses nothing (for metrics).
func (s *Snapshot) Counts() map[string]int {
	return map[string]int{
		"public":      len(s.pgp),
		"secret":      len(s.gwPGP),
		"certificate": len(s.certs),
		"identity":    len(s.smime),
		"ca":          len(s.anchors),
		"crl":         len(s.crls),
	}
}

// ReloadError returns the error of the last reload, or nil when it
// succeeded (or none was tried): the snapshot in service is then older
// than the last attempt.
func (h *Holder) ReloadError() error {
	if p := h.reloadErr.Load(); p != nil {
		return *p
	}
	return nil
}
