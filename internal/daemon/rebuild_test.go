package daemon

import (
	"testing"
	"time"
)

// TestWaitRebuiltHoldsUntilFirstSync: after a corrupt state file the ledger
// is empty until the first NRI Synchronize; a request that would hand out a
// GPU waits for it instead of seeing every GPU free.
func TestWaitRebuiltHoldsUntilFirstSync(t *testing.T) {
	d := &Daemon{rebuilding: true, Ready: make(chan struct{})}
	synced := time.Now().Add(100 * time.Millisecond)
	go func() { time.Sleep(time.Until(synced)); close(d.Ready) }()
	if err := d.waitRebuilt(); err != nil {
		t.Fatal(err)
	}
	if time.Now().Before(synced) {
		t.Fatal("request went ahead before the ledger was rebuilt")
	}
	if err := (&Daemon{Ready: make(chan struct{})}).waitRebuilt(); err != nil {
		t.Fatalf("an intact ledger must not wait: %v", err)
	}
}
