package daemon

import (
	"errors"
	"time"
)

// rebuildWait bounds how long a request waits for the first NRI Synchronize
// after a corrupt state file.
const rebuildWait = 10 * time.Second

// errRebuilding is returned while the ledger is still being rebuilt.
var errRebuilding = errors.New("hotgpud is rebuilding its ledger from the running containers " +
	"(its state file was corrupt) and cannot hand out GPUs yet; retry in a few seconds")

// waitRebuilt holds a request that would hand out a GPU until a ledger
// rebuilt from a corrupt state file has re-recorded the running containers'
// GPUs (the first NRI Synchronize): before that every GPU looks free.
func (d *Daemon) waitRebuilt() error {
	if !d.rebuilding {
		return nil
	}
	select {
	case <-d.Ready:
		return nil
	case <-time.After(rebuildWait):
		return errRebuilding
	}
}
