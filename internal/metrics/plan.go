package metrics

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// Plan records the cryptographic operations behind one plan of the engine,
// read from its decision and log details (the engine itself knows nothing
// of metrics):
//
//   - inbound: a decryption (encryption=decrypted or failed, with its
//     protocol) and a verification (signature other than none, with its
//     protocol; the verdict is the result); a failed decryption also
//     counts in cryptmilter_decryption_failures_total by reason class;
//   - outbound: an encryption per protocol some recipient got, a
//     signature per protocol a copy was signed with (signed copies, and
//     encrypted copies when the gateway had a signing key for that
//     protocol: they are signed, then encrypted).
//
// It counts once per message and kind, not per copy or layer.
func (m *Metrics) Plan(dir crypto.Direction, p *crypto.Plan) {
	if p == nil {
		return
	}
	for _, op := range planOps(dir, p) {
		m.Operation(op.protocol, op.operation, op.result)
		if op.reason != "" {
			m.DecryptionFailure(op.protocol, op.reason)
		}
	}
}

// EngineError records what an engine error tells: the gateway's secret
// keys (or the correspondents' keys and trust anchors) could not be read,
// so the decryption (or verification) was not even tried and the message
// was tempfailed. Other errors are no operation of their own (the message
// counts in cryptmilter_messages_total).
func (m *Metrics) EngineError(dir crypto.Direction, err error) {
	var ue *keystore.UnavailableError
	if dir != crypto.Inbound || !errors.As(err, &ue) {
		return
	}
	switch ue.Area {
	case keystore.AreaGatewayOpenPGP, keystore.AreaGatewaySMIME:
		proto := crypto.OpenPGP.String()
		if ue.Area == keystore.AreaGatewaySMIME {
			proto = crypto.SMIME.String()
		}
		m.Operation(proto, OpDecrypt, ResultTempfail)
		m.DecryptionFailure(proto, ReasonKeyringUnavailable)
	case keystore.AreaOpenPGP:
		m.Operation(crypto.OpenPGP.String(), OpVerify, ResultTempfail)
	case keystore.AreaCerts, keystore.AreaCA, keystore.AreaCRL:
		m.Operation(crypto.SMIME.String(), OpVerify, ResultTempfail)
	}
}

// op is one operation read from a plan.
type op struct {
	protocol, operation, result string
	reason                      string // decryption failure class
}

// planOps lists the operations of a plan.
func planOps(dir crypto.Direction, p *crypto.Plan) []op {
	a := map[string]slog.Value{}
	for _, at := range p.Attrs {
		a[at.Key] = at.Value.Resolve()
	}
	str := func(k string) string {
		if v, ok := a[k]; ok && v.Kind() == slog.KindString {
			return v.String()
		}
		return ""
	}
	num := func(k string) int64 {
		if v, ok := a[k]; ok && v.Kind() == slog.KindInt64 {
			return v.Int64()
		}
		return 0
	}
	var ops []op
	if dir == crypto.Inbound {
		encProto := str("enc_protocol")
		if encProto == "" {
			encProto = str("protocol") // the plan of a refused undecryptable message
		}
		switch str("encryption") {
		case "decrypted":
			ops = append(ops, op{protocol: encProto, operation: OpDecrypt, result: ResultOK})
		case "failed":
			ops = append(ops, op{protocol: encProto, operation: OpDecrypt, result: ResultFailed, reason: failureClass(str("reason"))})
		}
		if sig, proto := str("signature"), str("sig_protocol"); sig != "" && sig != "none" && proto != "" {
			ops = append(ops, op{protocol: proto, operation: OpVerify, result: sig})
		}
		return keepKnown(ops)
	}
	for _, proto := range []string{crypto.OpenPGP.String(), crypto.SMIME.String()} {
		enc := num("encrypt/"+proto) > 0
		if enc {
			ops = append(ops, op{protocol: proto, operation: OpEncrypt, result: ResultOK})
		}
		if num("sign/"+proto) > 0 || enc && str("signer_"+proto) != "" {
			ops = append(ops, op{protocol: proto, operation: OpSign, result: ResultOK})
		}
	}
	return ops
}

// failureClass maps the reason tokens of a failed decryption to its class.
func failureClass(reason string) string {
	for _, tok := range strings.Split(reason, ",") {
		if tok == "not-for-gateway" || tok == "inner-not-for-gateway" {
			return ReasonNotForGateway
		}
	}
	return ReasonDecryptFailed
}

// keepKnown drops operations without a known protocol, so that the
// protocol label keeps its two values.
func keepKnown(ops []op) []op {
	out := ops[:0]
	for _, o := range ops {
		if o.protocol == crypto.OpenPGP.String() || o.protocol == crypto.SMIME.String() {
			out = append(out, o)
		}
	}
	return out
}
