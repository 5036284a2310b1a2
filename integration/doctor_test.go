package integration

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/hotgpu/hotgpu/internal/doctor"
)

// TestDoctor runs the installed pair, the cgo-free hotgpu and its cgo
// helper hotgpu-cdi, against hotgpud on a real containerd with NRI up: every
// step passes, the attach test included (its sandbox is hotgpu itself,
// re-executed), and NRI is seen connected.
func TestDoctor(t *testing.T) {
	env := startEnv(t)
	dir := t.TempDir()
	hotgpu := filepath.Join(dir, "hotgpu")
	copyFile(t, buildBin(t, "./cmd/hotgpu"), hotgpu) // hotgpu-cdi is looked for next to the real file
	helper := exec.Command("go", "build", "-o", filepath.Join(dir, "hotgpu-cdi"), "github.com/hotgpu/hotgpu/cmd/hotgpu")
	helper.Env = append(os.Environ(), "CGO_ENABLED=1", "CGO_CFLAGS=-Wno-deprecated-declarations")
	if out, err := helper.CombinedOutput(); err != nil {
		t.Fatalf("build hotgpu-cdi: %v\n%s", err, out)
	}

	cmd := exec.Command(hotgpu, "doctor", "--simulate", "dgxa100", "--socket", env.d.socket, "--cdi-dir", env.c.CDIDir, "--attach-test", "-o", "json")
	out, err := cmd.Output()
	var r doctor.Report
	if jerr := json.Unmarshal(out, &r); jerr != nil {
		t.Fatalf("hotgpu doctor: %v, %v:\n%s", err, jerr, out)
	}
	for _, c := range r.Checks {
		t.Logf("%-4s %s/%s: %s", c.Status, c.Step, c.Name, c.Detail)
		if c.Status == doctor.Fail {
			t.Errorf("check failed: %s/%s: %s -> %s", c.Step, c.Name, c.Detail, c.Fix)
		}
	}
	if err != nil || r.Failed {
		t.Errorf("hotgpu doctor: %v, failed=%v", err, r.Failed)
	}
	want := map[string]doctor.Status{"runtime/nri": doctor.OK, "driver/nvml": doctor.OK, "cdi/devices": doctor.OK,
		"attach-test/open": doctor.OK, "attach-test/revoked": doctor.OK, "attach-test/cleanup": doctor.OK}
	for _, c := range r.Checks {
		if s, ok := want[c.Step+"/"+c.Name]; ok && s == c.Status {
			delete(want, c.Step+"/"+c.Name)
		}
	}
	if len(want) > 0 {
		t.Errorf("checks missing or not as wanted: %v", want)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, data, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
}
