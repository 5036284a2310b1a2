package integration

import (
	"os"
	"testing"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// TestMain builds containerd, runc and the images first (printing how long that
// took), and cleans up the shared containerd at the end.
func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
