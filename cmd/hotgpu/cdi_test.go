//go:build cgo

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	cdiapi "tags.cncf.io/container-device-interface/pkg/cdi"
	specs "tags.cncf.io/container-device-interface/specs-go"

	"github.com/hotgpu/hotgpu/internal/doctor"
)

var generateArgs = []string{"cdi", "generate", "--simulate", "dgxa100", "--format", "json", "--output", "-"}

func TestCDIGenerateJSON(t *testing.T) {
	code, stdout, stderr := runCLI(generateArgs...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	checkDGXA100Spec(t, []byte(stdout))
}

// TestGoRun checks the built binary, wiring of main included.
func TestGoRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	out, err := exec.Command("go", append([]string{"run", "."}, generateArgs...)...).Output()
	if err != nil {
		t.Fatalf("go run: %v", err)
	}
	checkDGXA100Spec(t, out)
}

// TestCgoFreeBuild builds hotgpu the way it is installed: cgo-free, with the
// cgo build next to it as hotgpu-cdi. The cgo-free one links none of the
// modules that slowed every start of the API commands (go-nvml, the CDI
// library and its YAML parser, logrus, the cgroup and systemd packages), and
// `hotgpu cdi` and `hotgpu doctor` through it give the same spec, reports,
// exit codes and messages.
func TestCgoFreeBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary twice; skipped with -short")
	}
	bin := t.TempDir()
	hotgpu, helper := filepath.Join(bin, "hotgpu"), filepath.Join(bin, cdiHelperName)
	for _, b := range []struct{ out, cgo string }{{hotgpu, "0"}, {helper, "1"}} {
		cmd := exec.Command("go", "build", "-o", b.out, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+b.cgo, "CGO_CFLAGS=-Wno-deprecated-declarations")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("CGO_ENABLED=%s go build: %v\n%s", b.cgo, err, out)
		}
	}
	info, err := exec.Command("go", "version", "-m", hotgpu).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(info), "CGO_ENABLED=0") {
		t.Fatalf("the cgo-free hotgpu links cgo:\n%s", info)
	}
	for _, heavy := range []string{"go-nvml", "container-device-interface", "yaml", "logrus", "opencontainers/cgroups", "godbus", "filepath-securejoin"} {
		if strings.Contains(string(info), heavy) {
			t.Errorf("the cgo-free hotgpu links %s:\n%s", heavy, info)
		}
	}
	out, err := exec.Command(hotgpu, generateArgs...).Output()
	if err != nil {
		t.Fatalf("hotgpu %v: %v", generateArgs, err)
	}
	checkDGXA100Spec(t, out)
	cmd := exec.Command(hotgpu, "cdi", "generate", "--bogus")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); cmd.ProcessState.ExitCode() != 2 || !strings.HasPrefix(stderr.String(), "hotgpu: flag provided but not defined") {
		t.Errorf("bad flag through the helper: %v, stderr %q; want exit 2 and one hotgpu: message", err, stderr.String())
	}
	checkDoctorNVML(t, hotgpu, doctor.OK, "simulated dgxa100")
	must(t, os.Remove(helper))
	cmd = exec.Command(hotgpu, "cdi", "list", "--simulate", "dgxa100")
	cmd.Env = append(os.Environ(), "PATH=/nonexistent")
	if out, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "make install") {
		t.Errorf("no helper: %v %q; want exit 1 saying how to install it", err, out)
	}
	cmd = exec.Command(hotgpu, "doctor", "--simulate", "dgxa100")
	cmd.Env = append(os.Environ(), "PATH=/nonexistent")
	if out, err := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "hotgpu doctor run in "+cdiHelperName) || !strings.Contains(string(out), "make install") {
		t.Errorf("doctor without the helper: %v %q; want exit 1 saying it runs in %s and how to install it", err, out, cdiHelperName)
	}
}

// checkDoctorNVML runs the cgo-free hotgpu's doctor, which runs in the
// helper, and checks its driver step's first line.
func checkDoctorNVML(t *testing.T, hotgpu string, status doctor.Status, says string) {
	t.Helper()
	cmd := exec.Command(hotgpu, "doctor", "--simulate", "dgxa100", "--socket", filepath.Join(t.TempDir(), "none.sock"), "--cdi-dir", t.TempDir(), "-o", "json")
	cmd.Env = append(os.Environ(), "PATH=/nonexistent")
	out, _ := cmd.Output()
	var r doctor.Report
	if err := json.Unmarshal(out, &r); err != nil || len(r.Checks) == 0 {
		t.Fatalf("hotgpu doctor -o json: %v:\n%s", err, out)
	}
	if c := r.Checks[0]; c.Name != "nvml" || c.Status != status || !strings.Contains(c.Detail, says) {
		t.Errorf("doctor through %s: %+v; want nvml %s saying %q", cdiHelperName, c, status, says)
	}
}

// checkDGXA100Spec loads the spec with the CDI library (which validates it)
// and checks the devices and nodes a simulated DGX A100 must have.
func checkDGXA100Spec(t *testing.T, data []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nvidia.com-gpu.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	loaded, err := cdiapi.ReadSpec(path, 0)
	if err != nil {
		t.Fatalf("the CDI library rejects the spec: %v", err)
	}
	spec := loaded.Spec
	var uuids int
	for i := range 8 {
		d := loaded.GetDevice(strconv.Itoa(i))
		if d == nil {
			t.Fatalf("device %d missing", i)
		}
		checkNode(t, d.ContainerEdits.DeviceNodes, "/dev/nvidia"+strconv.Itoa(i), 195, int64(i))
	}
	for _, d := range spec.Devices {
		if strings.HasPrefix(d.Name, "GPU-") {
			uuids++
		}
	}
	if uuids != 8 || loaded.GetDevice("all") == nil {
		t.Errorf("%d UUID devices and all=%v, want 8 and present", uuids, loaded.GetDevice("all") != nil)
	}
	checkNode(t, spec.ContainerEdits.DeviceNodes, "/dev/nvidiactl", 195, 255)
	for path, minor := range map[string]int64{"/dev/nvidia-uvm": 0, "/dev/nvidia-uvm-tools": 1} {
		checkNode(t, spec.ContainerEdits.DeviceNodes, path, -1, minor)
	}
}

// checkNode finds path among nodes and checks its numbers (major -1: any non-zero).
func checkNode(t *testing.T, nodes []*specs.DeviceNode, path string, major, minor int64) {
	t.Helper()
	i := slices.IndexFunc(nodes, func(n *specs.DeviceNode) bool { return n.Path == path })
	if i < 0 {
		t.Errorf("%s missing", path)
		return
	}
	n := nodes[i]
	if n.Type != "c" || n.Minor != minor || (major < 0 && n.Major == 0) || (major >= 0 && n.Major != major) {
		t.Errorf("%s = %+v, want c %d:%d", path, n, major, minor)
	}
}

func TestCDIGenerateOutput(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name   string
		args   []string
		path   string
		prefix string
	}{
		{"into a spec dir", []string{"--output", dir}, "hotgpu.yaml", "---"},
		{"json file", []string{"--output", filepath.Join(dir, "a.json")}, "a.json", "{"},
		{"no extension", []string{"--output", filepath.Join(dir, "b"), "--format", "json"}, "b.json", "{"},
		{"custom names", []string{"--output", dir, "--vendor", "example.com", "--class", "accel"}, "hotgpu.yaml", "---"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"cdi", "generate", "--simulate", "pcie8"}, tt.args...)
			code, stdout, stderr := runCLI(args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			want := filepath.Join(dir, tt.path)
			if !strings.Contains(stdout, want) {
				t.Errorf("stdout %q does not name %s", stdout, want)
			}
			data, err := os.ReadFile(want)
			if err != nil || !strings.HasPrefix(string(data), tt.prefix) {
				t.Fatalf("read %s: %v (%.20q)", want, err, data)
			}
		})
	}
}

func TestCDIList(t *testing.T) {
	code, stdout, stderr := runCLI("cdi", "list", "--simulate", "dgxa100", "--vendor", "example.com", "--class", "accel")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 17 || lines[0] != "example.com/accel=0" || lines[7] != "example.com/accel=7" ||
		!strings.HasPrefix(lines[8], "example.com/accel=GPU-") || lines[16] != "example.com/accel=all" {
		t.Fatalf("list = %q", lines)
	}
}
