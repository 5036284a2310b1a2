package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/hooks"
	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/driver"
	"github.com/hotgpu/hotgpu/internal/driver/drivertest"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

// The driver hotgpud finds with the inventory is the one every path gives:
// the hook's reservation carries the CDI spec's files.
func TestHookReservationCarriesTheDriver(t *testing.T) {
	cfg := testConfig(t)
	p, err := nvml.New(nvml.WithSimulate(cfg.Simulate))
	if err != nil {
		t.Fatal(err)
	}
	inv, err := p.Inventory()
	p.Close()
	if err != nil {
		t.Fatal(err)
	}
	root := drivertest.New(t, drivertest.Options{Version: inv.DriverVersion})
	cfg.DriverRoot = root.Dir
	c := runDaemon(t, cfg)
	res, err := c.HookReserve(context.Background(), api.HookReserveRequest{ContainerID: "docker-a", PID: os.Getpid(), IDs: []string{"0"}})
	if err != nil {
		t.Fatal(err)
	}
	want := drivertest.LibDir + "/libcuda.so." + root.Version
	if res.Driver == nil || !strings.Contains(fmt.Sprint(res.Driver.Mounts), want) || len(res.Driver.Symlinks) == 0 {
		t.Errorf("reservation's driver = %+v, want %s and its links", res.Driver, want)
	}

	plain := testConfig(t) // simulated, no driver root: nothing to give
	c = runDaemon(t, plain)
	if res, err := c.HookReserve(context.Background(), api.HookReserveRequest{ContainerID: "docker-a", PID: os.Getpid(), IDs: []string{"0"}}); err != nil || res.Driver != nil {
		t.Errorf("no driver root: driver %+v, err %v; want none", res.Driver, err)
	}
}

// What a live attach says about the driver: mounted, there already, or
// why not and what to do; nothing when the node has no driver to give.
func TestGiveDriverNotes(t *testing.T) {
	d := &Daemon{log: quietLog()}
	h := ledger.Holder{ContainerID: "c1", PID: 42}
	if note := d.giveDriver(h); note != "" {
		t.Errorf("no driver: note %q", note)
	}
	root := drivertest.New(t, drivertest.Options{})
	drv, err := driver.Discover(root.Dir, root.Version)
	if err != nil {
		t.Fatal(err)
	}
	d.driver.Store(drv)
	for name, tc := range map[string]struct {
		n    int
		err  error
		want []string
	}{
		"mounted":   {n: 9, want: []string{"mounted into the container: 9"}},
		"there":     {want: []string{"already in the container"}},
		"read-only": {err: errors.New("read-only file system"), want: []string{"not given", "read-only file system", "gpus.hotgpu.dev/hotplug"}},
		"no ldconfig": {n: 9, err: fmt.Errorf("%w (looked for /sbin/ldconfig)", hooks.ErrNoLDConfig),
			want: []string{"mounted into the container: 9", "LD_LIBRARY_PATH=" + drivertest.LibDir}},
		"no cache": {n: 9, err: errors.New("failed to build the container's linker cache: boom"),
			want: []string{"mounted into the container: 9", "boom", "LD_LIBRARY_PATH=" + drivertest.LibDir}},
	} {
		t.Run(name, func(t *testing.T) {
			old := giveRunning
			defer func() { giveRunning = old }()
			giveRunning = func(_ context.Context, pid int, e *driver.Edits) (int, *hooks.CacheMount, error) {
				if pid != h.PID || e == nil || len(e.Mounts) == 0 {
					t.Errorf("giveRunning(%d, %v)", pid, e)
				}
				return tc.n, nil, tc.err
			}
			note := d.giveDriver(h)
			for _, w := range tc.want {
				if !strings.Contains(note, w) {
					t.Errorf("note %q lacks %q", note, w)
				}
			}
		})
	}
}
