package hooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	oci "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/gpu"
)

func TestRequestOf(t *testing.T) {
	tests := []struct {
		name     string
		env      []string
		ann      map[string]string
		allowAll bool
		want     string // fmt of IDs/All, or "err:<substring>"
	}{
		{name: "nothing", want: "[] false"},
		{name: "nvidia ids", env: []string{"NVIDIA_VISIBLE_DEVICES=0,GPU-0a1b2c3d"}, want: "[0 GPU-0a1b2c3d] false"},
		{name: "hotgpu wins", env: []string{"NVIDIA_VISIBLE_DEVICES=1", "HOTGPU_VISIBLE_DEVICES=2"}, want: "[2] false"},
		{name: "annotation wins", env: []string{"NVIDIA_VISIBLE_DEVICES=1"}, ann: map[string]string{AnnotationDevices: "3"}, want: "[3] false"},
		{name: "image default all", env: []string{"NVIDIA_VISIBLE_DEVICES=all"}, want: "[] false"},
		{name: "env all allowed", env: []string{"NVIDIA_VISIBLE_DEVICES=all"}, allowAll: true, want: "[] true"},
		{name: "annotation all refused", ann: map[string]string{AnnotationDevices: "all"}, want: "err:--allow-all"},
		{name: "annotation all allowed", ann: map[string]string{AnnotationDevices: " all "}, allowAll: true, want: "[] true"},
		{name: "none", env: []string{"NVIDIA_VISIBLE_DEVICES=none"}, want: "[] false"},
		{name: "path", env: []string{"NVIDIA_VISIBLE_DEVICES=/dev/sda"}, want: "err:not a GPU index or UUID"},
		{name: "glob", ann: map[string]string{AnnotationDevices: "*"}, want: "err:not a GPU index or UUID"},
		{name: "duplicate", ann: map[string]string{AnnotationDevices: "1,1"}, want: "err:twice"},
		{name: "last definition wins", env: []string{"NVIDIA_VISIBLE_DEVICES=all", "NVIDIA_VISIBLE_DEVICES=1"}, want: "[1] false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &oci.Spec{Process: &oci.Process{Env: tt.env}, Annotations: tt.ann}
			r, err := requestOf(spec, tt.allowAll)
			got := fmt.Sprintf("%v %v", r.IDs, r.All)
			if err != nil {
				got = "err:" + err.Error()
			}
			if !strings.HasPrefix(tt.want, "err:") && got != tt.want || strings.HasPrefix(tt.want, "err:") && !strings.Contains(got, tt.want[4:]) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProcInventory(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		must(t, os.WriteFile(p, []byte(s), 0o644))
	}
	// Bus order, not directory creation order, makes the index.
	write(filepath.Join(dir, "gpus/0000:81:00.0/information"), "Model: \t A100\nGPU UUID: \t GPU-bbbb\nDevice Minor: \t 3\n")
	write(filepath.Join(dir, "gpus/0000:07:00.0/information"), "Model: \t A100\nGPU UUID: \t GPU-aaaa\nDevice Minor: \t 5\n")
	write(filepath.Join(dir, "devices"), "Character devices:\n195 nvidia\n508 nvidia-uvm\n\nBlock devices:\n259 blkext\n")
	inv, err := procInventory{driverProc: dir, procDevices: filepath.Join(dir, "devices")}.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.GPUs) != 2 || inv.GPUs[0].UUID != "GPU-aaaa" || inv.GPUs[0].Minor != 5 || inv.GPUs[1].Index != 1 || inv.GPUs[1].Minor != 3 {
		t.Errorf("GPUs = %+v", inv.GPUs)
	}
	wantCtl := []gpu.DeviceNode{{Path: "/dev/nvidiactl", Major: 195, Minor: 255}, {Path: "/dev/nvidia-uvm", Major: 508}, {Path: "/dev/nvidia-uvm-tools", Major: 508, Minor: 1}}
	if fmt.Sprint(inv.Control) != fmt.Sprint(wantCtl) {
		t.Errorf("control = %v, want %v", inv.Control, wantCtl)
	}

	write(filepath.Join(dir, "gpus/0000:90:00.0/information"), "Model: \t A100\nDevice Minor: \t 255\n")
	if _, err := (procInventory{driverProc: dir, procDevices: filepath.Join(dir, "devices")}).Inventory(); err == nil || !strings.Contains(err.Error(), "Device Minor") {
		t.Errorf("minor 255 (nvidiactl's) accepted as a GPU: %v", err)
	}
	if _, err := (procInventory{driverProc: filepath.Join(dir, "nope")}).Inventory(); err == nil || !strings.Contains(err.Error(), "no NVIDIA driver") {
		t.Errorf("missing driver: %v", err)
	}
}

// fakeRecorder stands in for hotgpud's API.
type fakeRecorder struct {
	reserveErr error
	reserved   []api.HookReserveRequest
	released   []string
}

func (f *fakeRecorder) HookReserve(_ context.Context, req api.HookReserveRequest) (*api.HookReservation, error) {
	f.reserved = append(f.reserved, req)
	if f.reserveErr != nil {
		return nil, f.reserveErr
	}
	return &api.HookReservation{GPUs: []gpu.GPU{{Index: 0, Minor: 0}}}, nil
}

func (f *fakeRecorder) HookRelease(_ context.Context, id string) error {
	f.released = append(f.released, id)
	return nil
}

// stateFor writes a bundle whose container has env and annotations and
// returns the OCI state with status.
func stateFor(t *testing.T, status oci.ContainerState, pid int, env []string, ann map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, "rootfs"), 0o755))
	config, _ := json.Marshal(oci.Spec{Version: oci.Version, Root: &oci.Root{Path: "rootfs"}, Process: &oci.Process{Env: env}, Annotations: ann})
	must(t, os.WriteFile(filepath.Join(dir, "config.json"), config, 0o644))
	st, _ := json.Marshal(oci.State{Version: oci.Version, ID: "c1", Status: status, Pid: pid, Bundle: dir})
	return string(st)
}

func TestPrestartDecisions(t *testing.T) {
	tests := []struct {
		name        string
		status      oci.ContainerState
		pid         int
		env         []string
		ann         map[string]string
		recorderErr error
		wantErr     string
		wantReserve int
		wantRelease int
	}{
		{name: "no request", status: oci.StateCreating, pid: 1234},
		{name: "kubernetes pod left alone", status: oci.StateCreating, pid: 1234, env: []string{"NVIDIA_VISIBLE_DEVICES=0"},
			ann: map[string]string{"io.kubernetes.pod.namespace": "team-a"}},
		{name: "no pid", status: oci.StateCreating, env: []string{"NVIDIA_VISIBLE_DEVICES=0"}, wantErr: "no container pid"},
		{name: "poststop releases", status: oci.StateStopped, wantRelease: 1},
		{name: "poststart does nothing", status: oci.StateRunning, pid: 1234, env: []string{"NVIDIA_VISIBLE_DEVICES=0"}},
		{name: "bad request fails", status: oci.StateCreating, pid: 1234, env: []string{"NVIDIA_VISIBLE_DEVICES=../x"}, wantErr: "not a GPU index"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &fakeRecorder{reserveErr: tt.recorderErr}
			var log strings.Builder
			p := &Prestart{Recorder: rec, Log: &log}
			err := p.Run(context.Background(), strings.NewReader(stateFor(t, tt.status, tt.pid, tt.env, tt.ann)))
			if (tt.wantErr == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if len(rec.reserved) != tt.wantReserve || len(rec.released) != tt.wantRelease {
				t.Errorf("reserved %d released %d, want %d %d", len(rec.reserved), len(rec.released), tt.wantReserve, tt.wantRelease)
			}
		})
	}
}

func TestDaemonDown(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "none.sock")
	err := api.NewClient(sock).HookRelease(context.Background(), "c1")
	if !daemonDown(err) {
		t.Errorf("missing socket not seen as hotgpud down: %v", err)
	}
	if daemonDown(errors.New("GPU 1 is held by container x")) {
		t.Error("a refusal taken for hotgpud down")
	}
	if !daemonDown(fmt.Errorf("wrapped: %w", syscall.ECONNREFUSED)) {
		t.Error("stale socket not seen as hotgpud down")
	}
}

// fakeInventory counts how often the standalone inventory is read.
type fakeInventory struct{ reads int }

func (f *fakeInventory) Inventory() (*gpu.Inventory, error) {
	f.reads++
	return &gpu.Inventory{GPUs: []gpu.GPU{{Index: 0, Minor: 0}, {Index: 1, Minor: 1}}}, nil
}

// TestPrestartFailsClosed: with hotgpud's socket missing or stale, the hook
// refuses (naming hotgpud, its socket and what to do) and never reads the
// driver's inventory, unless it was made standalone.
func TestPrestartFailsClosed(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "hotgpu.sock")
	down := []struct {
		name string
		err  error
	}{
		{"missing socket", api.NewClient(missing).HookRelease(context.Background(), "c1")},
		{"stale socket", fmt.Errorf("cannot reach hotgpud: %w", syscall.ECONNREFUSED)},
	}
	c := &container{state: oci.State{ID: "c1", Pid: 1234}}
	req := gpuRequest{IDs: []string{"1"}, From: "NVIDIA_VISIBLE_DEVICES"}
	for _, tt := range down {
		t.Run(tt.name, func(t *testing.T) {
			inv := &fakeInventory{}
			p := &Prestart{Recorder: &fakeRecorder{reserveErr: tt.err}, Socket: missing, Inventory: inv}
			res, recorded, err := p.reserve(context.Background(), c, req, "/c1")
			if err == nil || res != nil || recorded || inv.reads != 0 {
				t.Fatalf("hotgpud down: got %v recorded %t err %v (inventory read %d times); want a refusal and nothing read", res, recorded, err, inv.reads)
			}
			for _, want := range []string{"hotgpud does not answer", missing, "systemctl start hotgpud", "--standalone"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}

			p.Standalone = true
			res, recorded, err = p.reserve(context.Background(), c, req, "/c1")
			if err != nil || len(res.GPUs) != 1 || res.GPUs[0].Index != 1 || recorded || inv.reads != 1 {
				t.Fatalf("standalone: got %v recorded %t err %v; want GPU 1 from the inventory, unrecorded", res, recorded, err)
			}
		})
	}
	p := NewPrestart(missing, false, nil)
	if p.Standalone || p.Recorder == nil || p.Inventory != nil {
		t.Errorf("NewPrestart = %+v: want hotgpud's API and no standalone inventory", p)
	}
}
