package nvml

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func TestCheckMapsSentinels(t *testing.T) {
	tests := []struct {
		ret  nvml.Return
		want error
	}{
		{nvml.ERROR_NOT_FOUND, ErrNotFound},
		{nvml.ERROR_NOT_SUPPORTED, ErrNotSupported},
		{nvml.ERROR_NO_PERMISSION, ErrNoPermission},
		{nvml.ERROR_GPU_IS_LOST, ErrGPULost},
		{nvml.ERROR_LIBRARY_NOT_FOUND, ErrNVMLMissing},
		{nvml.ERROR_DRIVER_NOT_LOADED, ErrDriverNotLoaded},
	}
	for _, tt := range tests {
		t.Run(tt.ret.String(), func(t *testing.T) {
			err := check(tt.ret, "get UUID of GPU %d", 3)
			if !errors.Is(err, tt.want) {
				t.Fatalf("errors.Is(%v, %v) = false", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "failed to get UUID of GPU 3: NVML ") {
				t.Fatalf("message %q", err)
			}
		})
	}
	if check(nvml.SUCCESS, "anything") != nil {
		t.Fatal("SUCCESS became an error")
	}
	if errors.Is(check(nvml.ERROR_UNKNOWN, "x"), ErrNotFound) {
		t.Fatal("ERROR_UNKNOWN matched ErrNotFound")
	}
}

// TestNVMLMissing runs the real (non-simulated) path against driver roots
// that hold no usable libnvidia-ml.so.1.
func TestNVMLMissing(t *testing.T) {
	broken := t.TempDir()
	lib := filepath.Join(broken, "usr/lib/x86_64-linux-gnu", nvmlLibrary)
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, nil, 0o644); err != nil { // present but not loadable
		t.Fatal(err)
	}
	tests := []struct {
		name string
		root string
	}{
		{"empty root", t.TempDir()},
		{"unloadable library", broken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(WithDriverRoot(tt.root))
			if !errors.Is(err, ErrNVMLMissing) {
				t.Fatalf("got %v, want ErrNVMLMissing", err)
			}
			for _, want := range []string{tt.root, "--simulate dgxa100"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestRelativeDriverRoot(t *testing.T) {
	if _, err := New(WithDriverRoot("run/nvidia")); err == nil {
		t.Fatal("relative driver root accepted")
	}
}

// TestInitErrorsSayWhatToDo: a driver/library mismatch (a driver upgraded
// without a reboot) and a driver that is not loaded say how to fix them.
func TestInitErrorsSayWhatToDo(t *testing.T) {
	tests := []struct {
		ret  nvml.Return
		want error
		fix  string
	}{
		{nvml.ERROR_LIB_RM_VERSION_MISMATCH, ErrVersionMismatch, "reboot"},
		{nvml.ERROR_DRIVER_NOT_LOADED, ErrDriverNotLoaded, "modprobe nvidia"},
	}
	for _, tt := range tests {
		t.Run(tt.ret.Error(), func(t *testing.T) {
			p := newSimProvider(t, "dgxa100")
			p.sim.Server().InitFunc = func() nvml.Return { return tt.ret }
			err := p.init()
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.fix) || !strings.Contains(err.Error(), "reload") {
				t.Fatalf("err = %v, want %v saying %q and to reload the modules", err, tt.want, tt.fix)
			}
		})
	}
}
