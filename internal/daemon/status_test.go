package daemon

import (
	"context"
	"testing"
	"time"

	configv1 "github.com/hotgpu/hotgpu/api/config/v1"
)

// TestStatusReportsLastReconcile: hotgpu doctor tells a stuck reconcile
// loop by the status's last reconcile and interval.
func TestStatusReportsLastReconcile(t *testing.T) {
	cfg := testConfig(t)
	cfg.ReconcileInterval = configv1.Duration{Duration: time.Second}
	c := runDaemon(t, cfg)
	start := time.Now()
	for range 500 {
		st, err := c.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.ReconcileInterval != "1s" {
			t.Fatalf("reconcileInterval = %q, want 1s", st.ReconcileInterval)
		}
		if !st.LastReconcile.IsZero() {
			if st.LastReconcile.Before(start.Add(-time.Second)) || st.LastReconcile.After(time.Now()) {
				t.Fatalf("lastReconcile %v is not during this test (started %v)", st.LastReconcile, start)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no reconcile reported after 5s with a 1s interval")
}
