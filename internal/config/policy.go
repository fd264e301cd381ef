package config

import "github.com/cryptmilter/cryptmilter/crypto"

// EnginePolicy derives the engine's typed policy from the configuration
// (the engine never sees the configuration itself).
func (cfg *Config) EnginePolicy() crypto.Policy {
	o := cfg.Outbound
	rules := make([]crypto.Rule, len(o.Rules))
	for i, r := range o.Rules {
		rules[i] = crypto.Rule{Match: r.Match, Policy: r.Policy, Inline: r.Inline, MinTrust: r.MinTrust}
	}
	l := cfg.Limits
	return crypto.Policy{
		Hostname: cfg.Hostname,
		Limits: crypto.Limits{
			MaxMessageSize:      int64(l.MaxMessageSize),
			MaxHeaderSize:       int64(l.MaxHeaderSize),
			MaxMIMEDepth:        l.MaxMIMEDepth,
			MaxParts:            l.MaxParts,
			MaxDecompressedSize: int64(l.MaxDecompressedSize),
		},
		Inbound: crypto.InboundPolicy{
			RTHeaders:      cfg.Inbound.RTHeaders,
			KeepOriginal:   cfg.Inbound.KeepOriginal,
			UnwrapSigned:   cfg.Inbound.UnwrapSigned,
			AllowSHA1:      cfg.Inbound.AllowSHA1,
			ExactLocalPart: cfg.Inbound.ExactLocalPart,
		},
		Outbound: crypto.OutboundRules{
			Default:               o.Policy,
			Prefer:                o.Prefer,
			Split:                 o.Split,
			SignAs:                o.SignAs,
			ProtectHeaders:        o.ProtectHeaders,
			HeaderConfidentiality: o.HeaderConfidentiality,
			DeferRcpt:             o.DeferRcpt,
			Rules:                 rules,
		},
		Actions:       crypto.Actions(cfg.Actions),
		Discovery:     discoverySources(cfg.Discovery.Sources),
		FoldLocalPart: cfg.Keyring.FoldLocalPart,
	}
}

// discoverySources turns [discovery] sources into trust levels.
func discoverySources(srcs []string) []crypto.Trust {
	var out []crypto.Trust
	for _, s := range srcs {
		var t crypto.Trust
		if t.UnmarshalText([]byte(s)) == nil && t != crypto.TrustManual {
			out = append(out, t)
		}
	}
	return out
}
