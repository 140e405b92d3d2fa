package autoscaler

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any leaves a goroutine behind: the
// decision core starts none.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
