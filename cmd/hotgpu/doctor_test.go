//go:build cgo

package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/doctor"
)

func TestDoctorWithoutHotgpud(t *testing.T) {
	socket := filepath.Join(t.TempDir(), "hotgpu.sock")
	code, stdout, stderr := runCLI("doctor", "--simulate", "pcie8", "--socket", socket, "--cdi-dir", t.TempDir())
	if code != 1 || stderr != "hotgpu: 1 check(s) failed\n" {
		t.Fatalf("exit %d, stderr %q; want 1 and one line", code, stderr)
	}
	for _, want := range []string{"driver:\n", "  ok   nvml ", "simulated pcie8", "  fail reachable ", "no socket at " + socket, "-> start it", "ok, 1 warn, 1 fail, 3 skipped\n"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("doctor's report lacks %q:\n%s", want, stdout)
		}
	}

	code, stdout, _ = runCLI("doctor", "--simulate", "dgxa100", "--socket", socket, "--cdi-dir", t.TempDir(), "-o", "json")
	var r doctor.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != 1 || !r.Failed {
		t.Fatalf("-o json: exit %d, %v, failed=%v:\n%s", code, err, r.Failed, stdout)
	}
	if c := r.Checks[0]; c.Step != doctor.StepDriver || c.Name != "nvml" || c.Status != doctor.OK {
		t.Errorf("first check %+v, want the driver's nvml ok", c)
	}
}

func TestDoctorUsage(t *testing.T) {
	code, _, stderr := runCLI("doctor", "-o", "yaml")
	if code != 2 || !strings.Contains(stderr, "-o must be text or json") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	_, stdout, _ := runCLI("--help")
	if !strings.Contains(stdout, "doctor ") || strings.Contains(stdout, doctor.SandboxArg) {
		t.Errorf("help lists hidden commands or not doctor:\n%s", stdout)
	}
}
