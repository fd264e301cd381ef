package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a string ("30s", "2m").
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"30s\" or \"2m\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Size is a byte count, written as an integer or a string with a unit
// ("512KiB", "50MiB", "1GiB"; K/M/G are read as binary units too).
type Size int64

var units = map[string]int64{
	"": 1, "b": 1,
	"k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30,
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	t := strings.TrimSpace(string(b))
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	mult, ok := units[strings.ToLower(strings.TrimSpace(t[i:]))]
	if err != nil || !ok || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a size such as \"50MiB\" or 52428800", b)
	}
	*s = Size(n * mult)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) {
	switch {
	case s >= 1<<30 && s%(1<<30) == 0:
		return []byte(fmt.Sprintf("%dGiB", s>>30)), nil
	case s >= 1<<20 && s%(1<<20) == 0:
		return []byte(fmt.Sprintf("%dMiB", s>>20)), nil
	case s >= 1<<10 && s%(1<<10) == 0:
		return []byte(fmt.Sprintf("%dKiB", s>>10)), nil
	}
	return []byte(strconv.FormatInt(int64(s), 10)), nil
}

// Socket is a parsed listen or connect address.
type Socket struct {
	Network string // "unix" or "tcp"
	Address string // path, or host:port
	Spec    string // as written
}

func (s Socket) String() string { return s.Spec }

// ParseSocket parses a socket in Postfix syntax: unix:/path (also local:),
// inet:host:port, inet6:[addr]:port, and Sendmail's inet:port@host.
func ParseSocket(spec string) (Socket, error) {
	kind, rest, ok := strings.Cut(spec, ":")
	if !ok {
		return Socket{}, fmt.Errorf("%q: want unix:/path, inet:host:port or inet6:[addr]:port", spec)
	}
	switch kind {
	case "unix", "local":
		if !strings.HasPrefix(rest, "/") && !strings.HasPrefix(rest, "./") {
			return Socket{}, fmt.Errorf("%q: a unix socket needs a path, e.g. unix:/run/cryptmilter/milter.sock", spec)
		}
		return Socket{Network: "unix", Address: rest, Spec: spec}, nil
	case "inet", "inet6":
		host, port := "", ""
		if p, h, ok := strings.Cut(rest, "@"); ok && !strings.Contains(p, ":") {
			host, port = h, p // Sendmail: inet:port@host
		} else {
			var err error
			host, port, err = net.SplitHostPort(rest)
			if err != nil {
				return Socket{}, fmt.Errorf("%q: want %s:host:port (IPv6 in brackets: inet6:[::1]:8895)", spec, kind)
			}
		}
		host = strings.Trim(host, "[]")
		n, err := strconv.Atoi(port)
		if err != nil || n < 0 || n > 65535 {
			return Socket{}, fmt.Errorf("%q: port %q is not a number from 0 to 65535", spec, port)
		}
		if ip := net.ParseIP(host); ip == nil && host != "" && host != "localhost" && !validHostname(host) {
			return Socket{}, fmt.Errorf("%q: %q is not an address or host name", spec, host)
		} else if kind == "inet6" && ip != nil && ip.To4() != nil {
			return Socket{}, fmt.Errorf("%q: %q is not an IPv6 address", spec, host)
		}
		return Socket{Network: "tcp", Address: net.JoinHostPort(host, port), Spec: spec}, nil
	}
	return Socket{}, fmt.Errorf("%q: unknown socket type %q: want unix:/path, inet:host:port or inet6:[addr]:port", spec, kind)
}
