package keystore

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// ErrNoKey is returned by lookups when no usable key or certificate exists
// for the address at the requested time.
var ErrNoKey = errors.New("keystore: no usable key")

// ErrUnavailable is wrapped by the errors of lookups (and of
// Snapshot.Unavailable) whose answer is unknown because a file or
// directory that could hold the key could not be read, and nothing read
// there earlier was kept. Such an error does not wrap ErrNoKey: a caller
// must treat it as a temporary failure, never as "no key configured".
var ErrUnavailable = errors.New("keystore: keys unavailable")

// ErrNotFound is returned by Remove and Export when no key matches.
var ErrNotFound = errors.New("keystore: not found")

// ErrNeedPassphrase says that an input (a PKCS#12 file, an encrypted
// private key, a protected OpenPGP secret key) cannot be read without a
// passphrase and none was given. It is wrapped inside messages that name
// the input (hence no package prefix).
var ErrNeedPassphrase = errors.New("protected by a passphrase, and none was given")

// ErrWrongPassphrase says that the passphrase given does not unlock an
// input (wrapped like ErrNeedPassphrase).
var ErrWrongPassphrase = errors.New("wrong passphrase")

// ReadError is a file or directory of the keystore that could not be read
// (an I/O or permission error, not a problem with its content).
type ReadError struct {
	Path string // full path
	Err  error
}

func (e *ReadError) Error() string {
	return fmt.Sprintf("keystore: cannot read %s: %v", e.Path, errText(e.Err))
}

func (e *ReadError) withoutPath() string { return "cannot read: " + errText(e.Err) }

func (e *ReadError) Unwrap() error { return e.Err }

// errText drops the path an *fs.PathError repeats.
func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	return err.Error()
}

// PermissionError is a secret file or directory refused because its mode
// or its owner is unsafe, as ssh refuses private keys.
type PermissionError struct {
	Path string      // full path
	Dir  bool        // a directory
	Mode fs.FileMode // permission bits found
	// Want is the mode expected (0600 for files, 0700 for directories);
	// with a service group, Group may also read (0640, 0750).
	Want  fs.FileMode
	Group string
	// Owner is the uid found; WantOwner the uid expected when Owner is not
	// acceptable (the keystore directory's owner), else -1.
	Owner, WantOwner int
}

func (e *PermissionError) Error() string { return "keystore: " + e.Path + ": " + e.withoutPath() }

func (e *PermissionError) withoutPath() string {
	if e.WantOwner >= 0 {
		return fmt.Sprintf("owned by uid %d, not by the keystore's owner (uid %d), the user cryptmilter runs as, or root",
			e.Owner, e.WantOwner)
	}
	what := "secret key file"
	if e.Dir {
		what = "secret key directory"
	}
	want := fmt.Sprintf("%04o", e.Want)
	if e.Group != "" {
		want += fmt.Sprintf(" (or %04o with group %s)", e.Want|e.Want>>3&0o050, e.Group)
	}
	return fmt.Sprintf("permissions too open for a %s (mode %04o, want %s)", what, e.Mode.Perm(), want)
}

// faultText says what went wrong without repeating the path (which the
// fault names relative to the keystore).
func faultText(err error) string {
	var re *ReadError
	var pe *PermissionError
	switch {
	case errors.As(err, &pe):
		return pe.withoutPath()
	case errors.As(err, &re) && err == error(re):
		return re.withoutPath()
	}
	return strings.TrimPrefix(err.Error(), "keystore: ")
}

// InputError is a problem with one input of an import, named in the message.
type InputError struct {
	Name string // as given in Input.Name
	Err  error
}

func (e *InputError) Error() string { return fmt.Sprintf("keystore: %s: %v", e.Name, e.Err) }
func (e *InputError) Unwrap() error { return e.Err }

// SecretError is returned by Remove for a gateway secret key or identity
// when removing secrets was not asked for.
type SecretError struct {
	Fingerprint string
	File        string // relative to the keystore
}

func (e *SecretError) Error() string {
	return fmt.Sprintf("keystore: remove: %s is the gateway's secret key or identity in %s; not removed", e.Fingerprint, e.File)
}

// Fault is a file or directory of the keystore that could not be read (an
// I/O or permission error), or a secret refused for unsafe permissions.
type Fault struct {
	Path string // relative to the keystore directory
	Err  error  // a *ReadError or a *PermissionError
	// Kept is true when what the previous load read there is still in
	// service (a reload never drops keys because a place became
	// unreadable); false when nothing is known about its keys.
	Kept bool
}

func (f Fault) String() string {
	s := f.Path + ": " + faultText(f.Err)
	if f.Kept {
		s += " (keys read there earlier kept in service)"
	}
	return s
}

// UnavailableError says that keys of an area of the keystore are unknown:
// see ErrUnavailable.
type UnavailableError struct {
	Area   Area
	Addr   string  // the address looked up, if any
	Faults []Fault // what could not be read (or, for the gateway's secrets, used)
}

func (e *UnavailableError) Error() string {
	var b strings.Builder
	b.WriteString("keystore: ")
	if e.Addr != "" {
		fmt.Fprintf(&b, "key for %s unknown: ", e.Addr)
	}
	fmt.Fprintf(&b, "%s unavailable:", e.Area)
	for i, f := range e.Faults {
		if i > 0 {
			b.WriteString(";")
		}
		b.WriteString(" " + f.Path + ": " + faultText(f.Err))
	}
	return b.String()
}

func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }
