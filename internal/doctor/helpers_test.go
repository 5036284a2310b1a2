package doctor

import (
	"os"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/nvml"
)

var presets = []string{"dgxa100", "pcie8"}

// TestMain serves the attach test's sandbox when the test binary is
// re-executed as one, as hotgpu serves it.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == SandboxArg {
		os.Exit(SandboxMain(os.Args[2:], os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// simulated reads a simulated node's inventory; opts may change it first.
func simulated(t *testing.T, preset string, change func(*nvml.Sim), opts ...nvml.Option) *gpu.Inventory {
	t.Helper()
	p, err := nvml.New(append([]nvml.Option{nvml.WithSimulate(preset)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if change != nil {
		change(p.Simulation())
	}
	inv, err := p.Inventory()
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// find returns the one check of step named name.
func find(t *testing.T, cs []Check, stepName, name string) Check {
	t.Helper()
	var found []Check
	for _, c := range cs {
		if c.Step == stepName && c.Name == name {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one %s/%s check, got %d in:\n%s", stepName, name, len(found), dump(cs))
	}
	return found[0]
}

// expect checks c's status and that its detail (and fix) say what they must.
func expect(t *testing.T, c Check, status Status, says ...string) {
	t.Helper()
	text := c.Detail + " -> " + c.Fix
	if c.Status != status {
		t.Errorf("%s/%s = %s (%s), want %s", c.Step, c.Name, c.Status, text, status)
	}
	for _, s := range says {
		if !strings.Contains(text, s) {
			t.Errorf("%s/%s says %q, want it to mention %q", c.Step, c.Name, text, s)
		}
	}
}

func dump(cs []Check) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString(string(c.Status) + " " + c.Step + "/" + c.Name + ": " + c.Detail + "\n")
	}
	return b.String()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
