package integration

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

// benchSetupEnv marks the test binary re-run in another runtime setup by
// BenchmarkLiveSetups.
const benchSetupEnv = "HOTGPU_IT_BENCH_SETUP"

// BenchmarkLiveSetups measures a live attach + detach round trip (API, by
// pid, GPU 1) to a running ctr container in each runtime setup the suite
// has: cgroup v1 with the cgroupfs driver (this host), cgroup v2 with the
// cgroupfs driver (a private mount namespace, as TestCgroupV2CtrAttachByPID),
// and cgroup v2 with runc's systemd driver in the systemd machine (as
// TestSystemdDaemonReloadKeepsGrants), where each change is also a D-Bus
// call and systemd re-realizes the scope:
//
//	go test -run '^$' -bench LiveSetups -benchtime 50x ./integration/
//
// The v2 setups run in a re-executed test binary; their p50/p99 are
// reported here.
func BenchmarkLiveSetups(b *testing.B) {
	b.Run("v1-cgroupfs", func(b *testing.B) { benchLiveByPID(b) })
	b.Run("v2-cgroupfs", func(b *testing.B) {
		if os.Getenv(benchSetupEnv) != "" {
			benchLiveByPID(b, "--cpu-shares", "0")
			return
		}
		testenv.RequireRoot(b, "mounts cgroup2 in a private mount namespace")
		script := `umount -R -l /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup && exec "$@"`
		cmd := exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", os.Args[0]}, innerBenchArgs(b)...)...)
		cmd.Env = append(os.Environ(), benchSetupEnv+"=1")
		out, err := cmd.CombinedOutput()
		reportInner(b, out, err)
	})
	b.Run("v2-systemd", func(b *testing.B) {
		if os.Getenv(systemdMachineEnv) != "" {
			useBins(b, os.Getenv(systemdMachineEnv))
			benchLiveByPID(b, "--runc-systemd-cgroup", "--cgroup", "system.slice:hotgpu-it:bench"+strconv.Itoa(os.Getpid()), "--cpu-shares", "0")
			return
		}
		out, err := inSystemdMachine(b, innerBenchArgs(b)...)
		reportInner(b, out, err)
	})
}

// benchLiveByPID times API attach + detach by pid of GPU 1 to a ctr
// container started with flags.
func benchLiveByPID(b *testing.B, flags ...string) {
	env := startEnv(b, benchExtra()...)
	_, pid := ctrTask(b, env.c, flags...)
	client := api.NewClient(env.d.socket)
	target := attach.Target{PID: pid}
	ctx := context.Background()
	roundTrip(b, func() error {
		if _, err := client.Attach(ctx, api.AttachRequest{Target: target, IDs: []string{"1"}}); err != nil {
			return err
		}
		_, err := client.Detach(ctx, api.DetachRequest{Target: target, IDs: []string{"1"}})
		return err
	})
}

// innerBenchArgs runs just b again, as many rounds as b was given.
func innerBenchArgs(b *testing.B) []string {
	return []string{"-test.run=^$", "-test.bench=^" + regexp.QuoteMeta(b.Name()) + "$", "-test.benchtime=" + strconv.Itoa(max(b.N, 20)) + "x", "-test.timeout=8m"}
}

var innerMetric = regexp.MustCompile(`([0-9.]+) (p50-ms|p99-ms)`)

// reportInner reports the p50 and p99 a re-executed benchmark printed.
func reportInner(b *testing.B, out []byte, err error) {
	ms := innerMetric.FindAllSubmatch(out, -1)
	if err != nil || len(ms) < 2 {
		b.Fatalf("re-executed benchmark failed: %v\n%s", err, out)
	}
	for _, m := range ms[len(ms)-2:] {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		b.ReportMetric(v, string(m[2]))
	}
	b.ReportMetric(0, "ns/op") // the outer loop does not time anything
}
