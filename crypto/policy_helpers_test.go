package crypto

// testPolicy returns the policy of the default configuration (as cmd
// builds it from internal/config's defaults) changed by mod.
func testPolicy(mod func(*Policy)) Policy {
	p := Policy{
		Hostname: "localhost",
		Limits: Limits{
			MaxMessageSize:      50 << 20,
			MaxHeaderSize:       1 << 20,
			MaxMIMEDepth:        20,
			MaxParts:            500,
			MaxDecompressedSize: 64 << 20,
		},
		Outbound: OutboundRules{
			Default:               Opportunistic,
			Prefer:                OpenPGP,
			Split:                 PerRecipient,
			ProtectHeaders:        true,
			HeaderConfidentiality: true,
		},
		Actions: DefaultActions(),
	}
	if mod != nil {
		mod(&p)
	}
	return p
}
