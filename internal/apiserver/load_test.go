package apiserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/apiserver"
	"github.com/hotgpu/hotgpu/internal/attach"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
	"github.com/hotgpu/hotgpu/internal/registry"
	"github.com/hotgpu/hotgpu/internal/testenv"
)

const (
	loadGPUs       = 8
	loadContainers = 20
	loadClients    = 25
	loadRequests   = 200
	devicesRoot    = "/sys/fs/cgroup/devices"
)

// TestConcurrentAttachDetach sends 200 attach and detach requests from 25
// clients at once, over the real unix-socket API, to live attach on 20 real
// cgroup sandboxes sharing 8 GPUs. Every request is answered, nothing
// deadlocks, and at the end the ledger, every container's device cgroup and
// its /dev agree: each GPU is granted to at most one container, exactly the
// one the ledger names, and nothing is left pending.
func TestConcurrentAttachDetach(t *testing.T) {
	boxes := make([]*loadBox, loadContainers)
	for i := range boxes {
		boxes[i] = newLoadBox(t, i)
	}
	inv := loadInventory()
	store, err := ledger.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.New(store)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.New()
	for _, b := range boxes {
		reg.Put(registry.Container{ID: b.id, Name: "app", PodNamespace: "load", PodName: b.id, PodUID: "uid-" + b.id,
			PID: b.proc.Process.Pid, CgroupsPath: b.cgroup})
	}
	quiet := logrus.New()
	quiet.SetOutput(io.Discard)
	m := attach.New(fixedInv{inv}, healthy{}, l, reg, logrus.NewEntry(quiet))
	socket := filepath.Join(t.TempDir(), "api.sock")
	srv, err := apiserver.NewServer(socket, "", &loadBackend{m: m, l: l, inv: inv}, logrus.NewEntry(quiet))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	answered, ok := runLoad(t, socket, boxes)
	if answered != loadRequests {
		t.Fatalf("%d of %d requests answered", answered, loadRequests)
	}
	if ok == 0 {
		t.Fatal("no request succeeded: the load proved nothing")
	}
	t.Logf("%d requests answered, %d succeeded", answered, ok)
	checkAgreement(t, l, inv, boxes)
}

// runLoad fires the requests and returns how many got an answer from the
// server (success or a refusal) and how many succeeded.
func runLoad(t *testing.T, socket string, boxes []*loadBox) (answered, succeeded int) {
	t.Helper()
	var mu sync.Mutex
	var wg sync.WaitGroup
	reasons := map[string]int{}
	defer func() { t.Logf("refusals: %v", reasons) }()
	reqs := make(chan int)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for c := 0; c < loadClients; c++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			client := api.NewClient(socket)
			rng := rand.New(rand.NewPCG(seed, 42))
			for range reqs {
				box := boxes[rng.IntN(len(boxes))]
				err := oneRequest(ctx, client, rng, box)
				mu.Lock()
				if err == nil || !unanswered(err) {
					answered++
				} else {
					t.Errorf("request to %s not answered: %v", box.id, err)
				}
				if err == nil {
					succeeded++
				} else {
					reasons[reason(err)]++
				}
				mu.Unlock()
			}
		}(uint64(c))
	}
	for i := 0; i < loadRequests; i++ {
		select {
		case reqs <- i:
		case <-ctx.Done():
			t.Fatalf("deadlock: request %d not taken after 3 minutes", i)
		}
	}
	close(reqs)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("deadlock: requests still in flight after 3 minutes")
	}
	return answered, succeeded
}

func oneRequest(ctx context.Context, c *api.Client, rng *rand.Rand, box *loadBox) error {
	target := attach.Target{ContainerID: box.id}
	switch rng.IntN(4) {
	case 0:
		_, err := c.Attach(ctx, api.AttachRequest{Target: target, Count: 1 + rng.IntN(2)})
		return err
	case 1:
		_, err := c.Attach(ctx, api.AttachRequest{Target: target, IDs: []string{strconv.Itoa(rng.IntN(loadGPUs))}})
		return err
	case 2:
		_, err := c.Detach(ctx, api.DetachRequest{Target: target, IDs: []string{strconv.Itoa(rng.IntN(loadGPUs))}})
		return err
	default:
		_, err := c.Detach(ctx, api.DetachRequest{Target: target, All: true})
		return err
	}
}

// reason shortens a refusal to its kind, for the log.
func reason(err error) string {
	s := err.Error()
	for _, k := range []string{"is held by", "requested", "not attached", "no GPU that can be detached", "not found", "symlink"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// unanswered reports a transport failure (the client's wording) rather than
// an answer from hotgpud.
func unanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || strings.HasPrefix(err.Error(), "cannot reach hotgpud") ||
		strings.HasPrefix(err.Error(), "failed to call hotgpud")
}

// checkAgreement: every grant is active; each GPU is allowed in at most one
// container's cgroup and has a node only there, in exactly the container
// the ledger names; control nodes go with holding any GPU.
func checkAgreement(t *testing.T, l *ledger.Ledger, inv *gpu.Inventory, boxes []*loadBox) {
	t.Helper()
	holder := map[int]string{}
	for _, g := range l.Grants() {
		if g.State != ledger.Active {
			t.Errorf("grant left %s: %+v", g.State, g)
		}
		p, _ := inv.ByUUID(g.GPU)
		holder[p.Minor] = g.Holder.ContainerID
	}
	allowedIn := map[int][]string{}
	for _, b := range boxes {
		list := b.devicesList(t)
		if strings.Contains(list, "195:*") || strings.Contains(list, "a *:*") {
			t.Errorf("%s has a wildcard rule:\n%s", b.id, list)
		}
		holds := false
		for minor := 0; minor < loadGPUs; minor++ {
			rule := strings.Contains(list, fmt.Sprintf("c 195:%d rw", minor))
			_, nerr := os.Lstat(filepath.Join(b.root, "dev", "nvidia"+strconv.Itoa(minor)))
			mine := holder[minor] == b.id
			holds = holds || mine
			if rule {
				allowedIn[minor] = append(allowedIn[minor], b.id)
			}
			if rule != mine || (nerr == nil) != mine {
				t.Errorf("GPU %d in %s: cgroup rule %v, node %v, ledger holder %q", minor, b.id, rule, nerr == nil, holder[minor])
			}
		}
		if ctl := strings.Contains(list, "c 195:255 rw"); ctl != holds {
			t.Errorf("%s: nvidiactl allowed %v, holds a GPU %v", b.id, ctl, holds)
		}
	}
	for minor, ids := range allowedIn {
		if len(ids) > 1 {
			t.Errorf("GPU %d is allowed in %d containers: %v", minor, len(ids), ids)
		}
	}
}

type fixedInv struct{ inv *gpu.Inventory }

func (f fixedInv) Inventory() *gpu.Inventory { return f.inv }

type healthy struct{}

func (healthy) Healthy(string) bool { return true }

func loadInventory() *gpu.Inventory {
	inv := &gpu.Inventory{Control: []gpu.DeviceNode{{Path: "/dev/nvidiactl", Major: 195, Minor: 255}}}
	for i := 0; i < loadGPUs; i++ {
		inv.GPUs = append(inv.GPUs, gpu.GPU{Index: i, Minor: i, UUID: fmt.Sprintf("GPU-%08d-1oad-0000-0000-000000000000", i)})
	}
	return inv
}

// loadBackend is the part of the daemon the API needs, over a real Manager.
type loadBackend struct {
	m   *attach.Manager
	l   *ledger.Ledger
	inv *gpu.Inventory
}

func (b *loadBackend) Attach(t attach.Target, ids []string, n int) (*attach.Result, error) {
	return b.m.Attach(t, ids, n)
}

func (b *loadBackend) Detach(t attach.Target, ids []string, force bool) (*attach.Result, error) {
	return b.m.Detach(t, ids, force)
}

func (b *loadBackend) GPUs() []api.GPUStatus {
	var out []api.GPUStatus
	for _, g := range b.inv.GPUs {
		s := api.GPUStatus{GPU: g, Healthy: true}
		if grant, ok := b.l.Lookup(g.UUID); ok {
			s.Grant = &grant
		}
		out = append(out, s)
	}
	return out
}

func (b *loadBackend) Status() api.Status { return api.Status{GPUs: len(b.inv.GPUs)} }

// loadBox is a stand-in container: busybox sleep chrooted into its own root,
// in its own cgroup v1 devices cgroup with runc's base rules.
type loadBox struct {
	id, root, cgroup string
	proc             *exec.Cmd
}

func newLoadBox(t *testing.T, i int) *loadBox {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Skip(t, "needs root: creates cgroups and chroots")
	}
	if _, err := os.Stat(filepath.Join(devicesRoot, "devices.allow")); err != nil {
		testenv.Skipf(t, "needs a cgroup v1 devices hierarchy at %s", devicesRoot)
	}
	busybox := testenv.LookPath(t, "busybox", "apt-get install busybox-static")
	b := &loadBox{id: fmt.Sprintf("load%02d-%d", i, time.Now().UnixNano()), root: filepath.Join(t.TempDir(), "root")}
	b.cgroup = "/hotgpu-load-" + b.id
	mustDo(t, os.MkdirAll(filepath.Join(b.root, "dev"), 0o755))
	data, err := os.ReadFile(busybox)
	mustDo(t, err)
	mustDo(t, os.WriteFile(filepath.Join(b.root, "busybox"), data, 0o755))
	dir := filepath.Join(devicesRoot, b.cgroup)
	mustDo(t, os.Mkdir(dir, 0o755))
	mustDo(t, os.WriteFile(filepath.Join(dir, "devices.deny"), []byte("a"), 0))
	for _, rule := range []string{"c *:* m", "b *:* m", "c 1:3 rwm"} {
		mustDo(t, os.WriteFile(filepath.Join(dir, "devices.allow"), []byte(rule), 0))
	}
	script := fmt.Sprintf("echo $$ > %s && exec chroot %s /busybox sleep 600", filepath.Join(dir, "cgroup.procs"), b.root)
	b.proc = exec.Command("sh", "-c", script)
	mustDo(t, b.proc.Start())
	t.Cleanup(func() {
		_ = b.proc.Process.Kill()
		_ = b.proc.Wait()
		for j := 0; j < 50 && os.Remove(dir) != nil; j++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	for j := 0; ; j++ {
		if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/root", b.proc.Process.Pid)); link == b.root {
			return b
		}
		if j > 300 {
			t.Fatal("sandbox process did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (b *loadBox) devicesList(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(devicesRoot, b.cgroup, "devices.list"))
	mustDo(t, err)
	return string(data)
}

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
