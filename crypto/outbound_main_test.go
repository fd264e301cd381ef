package crypto

import (
	"os"
	"testing"
)

// TestMain removes the outbound fixture (keystore, gpg homes and agents)
// after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	outFix.cleanup()
	os.Exit(code)
}
