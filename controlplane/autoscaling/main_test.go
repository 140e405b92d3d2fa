package autoscaling_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any leaves a goroutine behind: the
// runner's, or the servers' the tests start.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
