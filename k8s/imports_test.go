package k8s

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/testenv"
)

// TestOnlyClientGoImporter: client-go stays in this package and the kubectl
// plugin (and the DRA plugin, package dra, the only importer of the DRA
// libraries); the daemon reaches the API server only through the agent.
func TestOnlyClientGoImporter(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		testenv.Skip(t, "needs the go command")
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "github.com/hotgpu/hotgpu/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := []string{"github.com/hotgpu/hotgpu/k8s", "github.com/hotgpu/hotgpu/cmd/kubectl-hotgpu", "github.com/hotgpu/hotgpu/dra"}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, " ")
		if strings.Contains(" "+imports, " k8s.io/client-go/") && !slices.Contains(allowed, pkg) {
			t.Errorf("%s imports client-go; only %v may", pkg, allowed)
		}
		if strings.Contains(" "+imports, " k8s.io/dynamic-resource-allocation/") && pkg != "github.com/hotgpu/hotgpu/dra" {
			t.Errorf("%s imports the DRA libraries; only package dra may", pkg)
		}
	}
}
