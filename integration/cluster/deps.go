package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Bins locates what integration/cluster-deps.sh built.
type Bins struct {
	Kubelet, Etcd, APIServer, ControllerManager, Scheduler, Kubectl string
	CNIDir                                                          string // tap, host-local, loopback
}

var deps struct {
	once sync.Once
	bins *Bins
	took time.Duration
	err  error
}

// BuildDeps runs integration/cluster-deps.sh once per process (it builds the
// control plane into the cache unless it is there) and says how long it took.
func BuildDeps(ctx context.Context, repoRoot string) (*Bins, time.Duration, error) {
	deps.once.Do(func() {
		start := time.Now()
		deps.bins, deps.err = buildDeps(ctx, repoRoot)
		deps.took = time.Since(start)
	})
	return deps.bins, deps.took, deps.err
}

func buildDeps(ctx context.Context, repoRoot string) (*Bins, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "integration", "cluster-deps.sh"))
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("integration/cluster-deps.sh failed: %w\n%s", err, tail(errOut.String(), 30))
	}
	lines := strings.Fields(strings.TrimSpace(out.String()))
	if len(lines) < 3 {
		return nil, fmt.Errorf("integration/cluster-deps.sh printed %q, want the kubelet, bin dir and CNI dir", out.String())
	}
	kubelet, bin, cni := lines[len(lines)-3], lines[len(lines)-2], lines[len(lines)-1]
	return &Bins{
		Kubelet: kubelet, Etcd: filepath.Join(bin, "etcd"), APIServer: filepath.Join(bin, "kube-apiserver"),
		ControllerManager: filepath.Join(bin, "kube-controller-manager"), Scheduler: filepath.Join(bin, "kube-scheduler"),
		Kubectl: filepath.Join(bin, "kubectl"), CNIDir: cni,
	}, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
