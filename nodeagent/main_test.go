package nodeagent

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine they started outlives
// them: a supervisor, a timer's write, a gossip member, an HTTP
// connection.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
