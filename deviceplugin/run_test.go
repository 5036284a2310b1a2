package deviceplugin

import (
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/hotgpu/hotgpu/internal/ledger"
)

func TestRegistersAndAdvertisesEveryGPU(t *testing.T) {
	dir := shortDir(t)
	k := startFakeKubelet(t, dir)
	f := newFixture(t, "dgxa100", WithKubeletDir(dir), WithResourceName("example.com/gpu"), WithRetry(50*time.Millisecond))
	runPlugin(t, f)
	r := k.waitRegistered(t)
	if r.ResourceName != "example.com/gpu" || r.Version != pluginapi.Version || r.Endpoint != "hotgpu-example-com-gpu.sock" || !r.Options.GetPreferredAllocationAvailable {
		t.Fatalf("registration = %+v", r)
	}
	k.waitDevices(t, "8 healthy GPUs", func(m map[string]string) bool {
		return len(m) == 8 && m[f.uuid(0)] == pluginapi.Healthy && m[f.uuid(7)] == pluginapi.Healthy
	})
}

func TestListAndWatchWithdrawsGPUsHeldElsewhere(t *testing.T) {
	dir := shortDir(t)
	k := startFakeKubelet(t, dir)
	// No resync during the test: changes must reach kubelet through the
	// ledger's and health's notifications, not a periodic re-read.
	f := newFixture(t, "dgxa100", WithKubeletDir(dir), WithRetry(50*time.Millisecond), WithResync(time.Hour))
	runPlugin(t, f)
	k.waitRegistered(t)
	healthy := func(i int, want string) func(map[string]string) bool {
		return func(m map[string]string) bool { return m[f.uuid(i)] == want }
	}
	k.waitDevices(t, "GPU 2 healthy", healthy(2, pluginapi.Healthy))

	steps := []struct {
		name   string
		change func() error
		gpu    int
		want   string
	}{
		{"live attach withdraws", func() error { return f.ledger.Acquire(attached, ledger.Attach, ledger.Active, f.uuid(2)) }, 2, pluginapi.Unhealthy},
		{"detach gives it back", func() error { _, err := f.ledger.Release(attached.ContainerID); return err }, 2, pluginapi.Healthy},
		{"annotation withdraws", func() error { return f.ledger.Acquire(attached, ledger.Annotation, ledger.Active, f.uuid(3)) }, 3, pluginapi.Unhealthy},
		{"container gone gives it back", func() error { _, _, err := f.ledger.ContainerGone(attached.ContainerID); return err }, 3, pluginapi.Healthy},
		{"an Xid makes it unhealthy", func() error { f.health.Report(f.uuid(5), "Xid 79"); return nil }, 5, pluginapi.Unhealthy},
		{"a reset makes it healthy", func() error { f.health.Set(f.uuid(5), true, ""); return nil }, 5, pluginapi.Healthy},
		{"a forced detach of a held GPU quarantines it", func() error {
			if err := f.ledger.Acquire(attached, ledger.Attach, ledger.Active, f.uuid(6)); err != nil {
				return err
			}
			return f.ledger.Quarantine(attached.ContainerID, "pid 42 holds it", f.uuid(6))
		}, 6, pluginapi.Unhealthy},
		{"lifting the quarantine gives it back", func() error { _, err := f.ledger.Lift(f.uuid(6)); return err }, 6, pluginapi.Healthy},
		{"a DRA claim withdraws", func() error {
			return f.ledger.Acquire(ledger.Holder{ClaimUID: "u1", Claim: "ml/c"}, ledger.DRA, ledger.Active, f.uuid(7))
		}, 7, pluginapi.Unhealthy},
		{"unpreparing the claim gives it back", func() error {
			_, err := f.ledger.ReleaseWhere(func(g ledger.Grant) bool { return g.Holder.ClaimUID == "u1" })
			return err
		}, 7, pluginapi.Healthy},
	}
	for _, s := range steps {
		if err := s.change(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		k.waitDevices(t, s.name, healthy(s.gpu, s.want))
	}
	// kubelet's own allocation changes nothing kubelet sees.
	if err := f.ledger.Acquire(ledger.Holder{}, ledger.Kubelet, ledger.Active, f.uuid(4)); err != nil {
		t.Fatal(err)
	}
	if got := f.p.state(&f.inv.GPUs[4]); got != pluginapi.Healthy {
		t.Fatalf("a GPU kubelet allocated is reported %s", got)
	}
}

func TestRegistersAgainAfterKubeletRestart(t *testing.T) {
	dir := shortDir(t)
	k := startFakeKubelet(t, dir)
	f := newFixture(t, "pcie8", WithKubeletDir(dir), WithRetry(50*time.Millisecond))
	runPlugin(t, f)
	k.waitRegistered(t)

	k = k.restart(t) // deletes our socket, re-creates kubelet.sock
	k.waitRegistered(t)
	k.waitDevices(t, "the GPUs after the restart", func(m map[string]string) bool { return len(m) == 8 })
	// kubelet has seen the request; the plugin records it once the reply is in.
	for deadline := time.Now().Add(5 * time.Second); !f.p.Registered() || f.p.Registrations() < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("registered=%v registrations=%d", f.p.Registered(), f.p.Registrations())
		}
	}
}

func TestWaitsForKubeletThatIsNotUpYet(t *testing.T) {
	dir := shortDir(t)
	f := newFixture(t, "pcie8", WithKubeletDir(dir), WithRetry(50*time.Millisecond))
	runPlugin(t, f)
	time.Sleep(200 * time.Millisecond) // a few failed attempts
	if f.p.Registered() {
		t.Fatal("registered without a kubelet")
	}
	k := startFakeKubelet(t, dir)
	k.waitRegistered(t)
}
