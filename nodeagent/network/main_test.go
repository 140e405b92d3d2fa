package network

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine they started outlives
// them: a warm pool's refill, a CNI ADD, a listener in a namespace.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
