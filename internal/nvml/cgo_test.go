package nvml

import (
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/testenv"
)

// TestCgoPackages keeps go-nvml the only cgo package outside the standard
// library: the Makefile's CGO_CFLAGS=-Wno-deprecated-declarations exists for
// go-nvml's header alone and must not hide another package's warnings.
func TestCgoPackages(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		testenv.Skip(t, "needs the go command")
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .CgoFiles}}{{if not .Standard}}{{.ImportPath}}{{end}}{{end}}", "github.com/hotgpu/hotgpu/...")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	var got []string
	for _, p := range strings.Fields(string(out)) {
		if !slices.Contains(got, p) {
			got = append(got, p)
		}
	}
	slices.Sort(got)
	want := []string{"github.com/NVIDIA/go-nvml/pkg/dl", "github.com/NVIDIA/go-nvml/pkg/nvml"}
	if !slices.Equal(got, want) {
		t.Fatalf("non-standard cgo packages = %v, want only go-nvml's %v: the Makefile's CGO_CFLAGS would silence their deprecation warnings too", got, want)
	}
}
