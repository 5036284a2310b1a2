package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/apiserver"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

var _ apiserver.HookBackend = (*Daemon)(nil)

// HookReserve implements apiserver.HookBackend: it records the GPUs hotgpu-hook is
// about to give a container that a runtime without NRI is creating. GPUs the
// container already holds (for instance through NRI) are kept as they are.
// All is refused unless every GPU is free, so "all" never shares a GPU.
func (d *Daemon) HookReserve(req api.HookReserveRequest) (*api.HookReservation, error) {
	if err := d.waitRebuilt(); err != nil {
		return nil, err
	}
	inv := d.Inventory()
	var gpus []gpu.GPU
	if req.All {
		gpus = inv.GPUs
	} else {
		found, err := inv.LookupAll(req.IDs)
		if err != nil {
			return nil, err
		}
		for _, g := range found {
			gpus = append(gpus, *g)
		}
	}
	h := ledger.Holder{ContainerID: req.ContainerID, PID: req.PID, Cgroup: req.Cgroup}
	var fresh []string
	for _, g := range gpus {
		if cur, held := d.ledger.Lookup(g.UUID); held && cur.Holder.ContainerID == req.ContainerID {
			continue
		}
		if !d.health.Healthy(g.UUID) {
			return nil, fmt.Errorf("%w: GPU %d is unhealthy", apiserver.ErrRefused, g.Index)
		}
		fresh = append(fresh, g.UUID)
	}
	if err := d.ledger.Acquire(h, ledger.Hook, ledger.Active, fresh...); err != nil {
		return nil, err
	}
	d.log.WithFields(map[string]any{"container": h.String(), "gpus": fresh}).Info("recorded GPUs granted by hotgpu-hook")
	return &api.HookReservation{GPUs: gpus, Control: inv.Control, Driver: d.DriverEdits()}, nil
}

// HookRelease implements apiserver.HookBackend: it frees the container's hook
// grants (poststop, or the hook rolling back). Grants of other reasons stay.
func (d *Daemon) HookRelease(containerID string) ([]ledger.Grant, error) {
	var uuids []string
	for _, g := range d.ledger.Container(containerID) {
		if g.Reason == ledger.Hook {
			uuids = append(uuids, g.GPU)
		}
	}
	if len(uuids) == 0 {
		return nil, nil
	}
	return d.ledger.Release(containerID, uuids...)
}

// sweepHookGrants releases hook grants whose container is gone: its init
// process exited, or the pid now belongs to another cgroup. The poststop
// hook normally releases them; this covers a runtime that never ran it.
func (d *Daemon) sweepHookGrants() {
	gone := map[string]bool{}
	for _, g := range d.ledger.Grants() {
		if g.Reason == ledger.Hook && !hookHolderAlive(g.Holder) {
			gone[g.Holder.ContainerID] = true
		}
	}
	for id := range gone {
		if freed, err := d.HookRelease(id); err != nil {
			d.log.WithError(err).WithField("container", id).Warn("failed to release GPUs of a container that is gone")
		} else if len(freed) > 0 {
			d.log.WithFields(map[string]any{"container": id, "gpus": len(freed)}).Info("released hook GPUs of a container that is gone")
		}
	}
}

func hookHolderAlive(h ledger.Holder) bool {
	if h.PID <= 0 {
		return false
	}
	if err := syscall.Kill(h.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if h.Cgroup == "" {
		return true
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(h.PID) + "/cgroup")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	return cgroupFileHas(string(b), h.Cgroup)
}

// cgroupFileHas reports whether a /proc/<pid>/cgroup file lists path in any
// hierarchy (the hook records the path of the hierarchy that holds the
// container's device rules).
func cgroupFileHas(file, path string) bool {
	want := filepath.Clean(path)
	for _, line := range strings.Split(file, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 && filepath.Clean(parts[2]) == want {
			return true
		}
	}
	return false
}
