package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
)

// TestCtrRunHotgpudCDISpec proves the CDI path for runtimes that never reach
// NRI: hotgpud writes its spec into containerd's CDI dir and
// `ctr run --device nvidia.com/gpu=1` gives the container GPU 1 and nothing
// else (nerdctl resolves --device the same way, through the same library).
func TestCtrRunHotgpudCDISpec(t *testing.T) {
	c := harness.StartContainerd(t, harness.Options{Bins: harness.Deps(t)})
	metricsAddr := freeAddr(t)
	d := startHotgpudNoNRI(t, "--cdi-dir", c.CDIDir, "--metrics-address", metricsAddr)
	if _, err := os.Stat(filepath.Join(c.CDIDir, "hotgpu.yaml")); err != nil {
		t.Fatalf("hotgpud wrote no CDI spec: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := `ls -l /dev/nvidia1 /dev/nvidiactl && cat /dev/nvidia1; ls /dev/nvidia0; mknod /dev/nvidia0 c 195 0 && cat /dev/nvidia0; true`
	res, err := c.CtrRun(ctx, fmt.Sprint("gpu1-", time.Now().UnixNano()), harness.BusyboxImage,
		[]string{"sh", "-c", script}, "--device", "nvidia.com/gpu=1")
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.Contains(res.Stdout, "195,   1 ") || !strings.Contains(res.Stdout, "195, 255 ") {
		t.Fatalf("ctr run --device nvidia.com/gpu=1 = %+v, want /dev/nvidia1 (195:1) and /dev/nvidiactl", res)
	}
	for _, want := range []string{
		"/dev/nvidia1': No such device or address", // granted, no driver
		"/dev/nvidia0: No such file",               // not injected
		"/dev/nvidia0': Operation not permitted",   // self-made node refused by the cgroup
	} {
		if !strings.Contains(res.Stderr, want) {
			t.Errorf("ctr run stderr = %q, want it to contain %q", res.Stderr, want)
		}
	}

	// By UUID, as `nvidia-smi -L` names GPUs.
	uuid := d.uuid(t, 3)
	res, err = c.CtrRun(ctx, fmt.Sprint("gpu-uuid-", time.Now().UnixNano()), harness.BusyboxImage,
		[]string{"ls", "-l", "/dev/nvidia3"}, "--device", "nvidia.com/gpu="+uuid)
	if err != nil || res.ExitCode != 0 || !strings.Contains(res.Stdout, "195,   3 ") {
		t.Errorf("ctr run --device nvidia.com/gpu=%s = %+v, %v", uuid, res, err)
	}

	// The daemon's metrics endpoint while at it.
	body := httpGet(t, "http://"+metricsAddr+"/metrics")
	if !strings.Contains(body, `hotgpu_gpus{state="free"} 8`) {
		t.Errorf("/metrics: want 8 free GPUs:\n%s", body)
	}
	if got := httpGet(t, "http://"+metricsAddr+"/healthz"); got != "ok\n" {
		t.Errorf("/healthz = %q", got)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %s: %s", url, resp.Status, b)
	}
	return string(b)
}
