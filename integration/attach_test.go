package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/api"
)

// Live attach and detach through the real hotgpu CLI and hotgpud, on real
// containers of a real containerd: CRI pods (found through NRI) and a
// `ctr run` container (found by --pid).

// cli runs the real hotgpu binary against d's socket.
func cli(t testing.TB, d *hotgpud, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(buildBin(t, "./cmd/hotgpu"), append(args, "--socket", d.socket)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("failed to run hotgpu %v: %v", args, err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// mustCLI runs hotgpu and fails t unless it exits 0.
func mustCLI(t testing.TB, d *hotgpud, args ...string) string {
	t.Helper()
	out, errOut, code := cli(t, d, args...)
	if code != 0 {
		t.Fatalf("hotgpu %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// lsJSON is `hotgpu ls -o json`.
func lsJSON(t testing.TB, d *hotgpud) []api.GPUStatus {
	t.Helper()
	var gpus []api.GPUStatus
	if err := json.Unmarshal([]byte(mustCLI(t, d, "ls", "-o", "json")), &gpus); err != nil {
		t.Fatalf("hotgpu ls -o json: %v", err)
	}
	return gpus
}

// heldBy returns the indices of the GPUs the ledger gives container id.
func heldBy(t testing.TB, d *hotgpud, id string) []int {
	t.Helper()
	var out []int
	for i, h := range d.holders(t) {
		if strings.HasSuffix(h, ":"+id) {
			out = append(out, i)
		}
	}
	slices.Sort(out)
	return out
}

// controlNodes lists the control nodes (/dev/nvidiactl, /dev/nvidia-uvm*) in the container.
func controlNodes(t *testing.T, c *harness.Containerd, ctr string) []string {
	t.Helper()
	out, _, _ := c.MustExec(t, ctr, "sh", "-c", "cd /dev && ls -d nvidiactl nvidia-uvm* 2>/dev/null; true")
	return strings.Fields(out)
}

func nodeNames(idx ...int) []string {
	out := make([]string, len(idx))
	for i, n := range idx {
		out[i] = "nvidia" + strconv.Itoa(n)
	}
	return out
}

func TestAttach(t *testing.T) {
	// A short reconcile: a quarantined GPU comes back within a pass once
	// its holder exits (testAttachBusy).
	conf := filepath.Join(t.TempDir(), "hotgpud.yaml")
	must(t, os.WriteFile(conf, []byte("version: v1\nreconcileInterval: 1s\n"), 0o644))
	env := startEnv(t, "--config", conf)
	t.Run("CRI pod", func(t *testing.T) { testAttachPod(t, env) })
	t.Run("ctr container by pid", func(t *testing.T) { testAttachCtrPID(t, env) })
	t.Run("busy GPU", func(t *testing.T) { testAttachBusy(t, env) })
	t.Run("busy GPU in a sub-cgroup", func(t *testing.T) { testAttachBusySubCgroup(t, env) })
	t.Run("re-grant after detach", func(t *testing.T) { testRegrantRevoked(t, env) })
	t.Run("symlink attack", func(t *testing.T) { testAttachSymlinks(t, env) })
	if h := env.d.holders(t); len(h) != 0 {
		t.Fatalf("GPUs still held after every container is gone: %v", h)
	}
}

// testAttachPod: a pod started without GPUs gets two live, loses them one
// by one, and can then open neither, not even through a node it makes itself.
func testAttachPod(t *testing.T, env *gpuEnv) {
	c, d := env.c, env.d
	pod := c.MustRunPod(t, "live", nil)
	ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{}) // containerd's default caps include MKNOD
	if n := append(gpuNodes(t, c, ctr), controlNodes(t, c, ctr)...); len(n) != 0 {
		t.Fatalf("pod without a request has %v", n)
	}
	before := devicesList(t, c, ctr)

	out := mustCLI(t, d, "attach", "--pod", harness.PodNamespace+"/live", "--count", "2")
	gpus := heldBy(t, d, ctr)
	if len(gpus) != 2 || strings.Count(out, "attached GPU") != 2 {
		t.Fatalf("attach --count 2: ledger gives the container %v; CLI said:\n%s", gpus, out)
	}
	if got := gpuNodes(t, c, ctr); !slices.Equal(got, nodeNames(gpus...)) {
		t.Fatalf("GPU nodes in container = %v, want %v", got, nodeNames(gpus...))
	}
	for _, p := range []string{"/dev/" + nodeNames(gpus[0])[0], "/dev/" + nodeNames(gpus[1])[0], "/dev/nvidiactl", "/dev/nvidia-uvm"} {
		if got := openIn(t, c, ctr, p); got != "ENXIO" {
			t.Errorf("after attach, open %s = %s, want ENXIO (allowed, no driver)", p, got)
		}
	}
	list := devicesList(t, c, ctr)
	for _, g := range gpus {
		if !strings.Contains(list, fmt.Sprintf("c 195:%d rw", g)) {
			t.Errorf("devices.list lacks GPU %d:\n%s", g, list)
		}
	}
	if strings.Contains(list, "195:*") || strings.Contains(list, "a *:*") {
		t.Errorf("devices.list has a wildcard:\n%s", list)
	}
	for _, g := range lsJSON(t, d) {
		if !slices.Contains(gpus, g.Index) {
			continue
		}
		if g.Grant == nil || g.Grant.Reason != "attach" || g.Grant.State != "active" ||
			g.Grant.Holder.ContainerID != ctr || g.Grant.Holder.PodName != "live" || g.Grant.Holder.Container != "app" {
			t.Errorf("hotgpu ls -o json, GPU %d: grant %+v, want active attach by %s (pod live, container app)", g.Index, g.Grant, ctr)
		}
	}
	if table := mustCLI(t, d, "ls"); strings.Count(table, "attach") != 2 {
		t.Errorf("hotgpu ls table shows %d attach rows, want 2:\n%s", strings.Count(table, "attach"), table)
	}

	first, last := gpus[0], gpus[1]
	mustCLI(t, d, "detach", "--pod", harness.PodNamespace+"/live", "--gpu", strconv.Itoa(first))
	if got := gpuNodes(t, c, ctr); !slices.Equal(got, nodeNames(last)) {
		t.Fatalf("after detaching GPU %d the container has %v", first, got)
	}
	// CVE-2021-1056: the container makes the node again itself.
	if _, stderr, code := c.MustExec(t, ctr, "mknod", "/dev/"+nodeNames(first)[0], "c", "195", strconv.Itoa(first)); code != 0 {
		t.Fatalf("mknod: %s", stderr)
	}
	if got := openIn(t, c, ctr, "/dev/"+nodeNames(first)[0]); got != "EPERM" {
		t.Errorf("self-made node of the detached GPU: open = %s, want EPERM", got)
	}
	if got := controlNodes(t, c, ctr); len(got) == 0 || openIn(t, c, ctr, "/dev/nvidiactl") != "ENXIO" {
		t.Errorf("control nodes must stay while a GPU is attached: %v", got)
	}

	mustCLI(t, d, "detach", "--container", ctr[:12], "--all")
	if got := gpuNodes(t, c, ctr); !slices.Equal(got, nodeNames(first)) { // only the self-made one
		t.Errorf("after detaching the last GPU the container has %v", got)
	}
	if got := controlNodes(t, c, ctr); len(got) != 0 {
		t.Errorf("detaching the last GPU left control nodes %v", got)
	}
	if got := openIn(t, c, ctr, "/dev/"+nodeNames(first)[0]); got != "EPERM" {
		t.Errorf("self-made node after detach: %s, want EPERM", got)
	}
	if after := devicesList(t, c, ctr); after != before {
		t.Errorf("devices.list after detaching everything:\n%s\nwant as before attach:\n%s", after, before)
	}
	if got := heldBy(t, d, ctr); len(got) != 0 {
		t.Errorf("ledger still gives the container %v", got)
	}
}

// ctrTask starts `ctr run -d` with sleep (and any more ctr run flags) and
// returns its id and host pid.
func ctrTask(t testing.TB, c *harness.Containerd, flags ...string) (id string, pid int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id = fmt.Sprint("att-", time.Now().UnixNano())
	if res, err := c.CtrRun(ctx, id, harness.BusyboxImage, []string{"sleep", "600"}, append([]string{"-d"}, flags...)...); err != nil || res.ExitCode != 0 {
		t.Fatalf("ctr run -d: %+v, %v", res, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, _ = c.Ctr(ctx, harness.CtrNamespace, "tasks", "rm", "-f", id)
		_, _ = c.Ctr(ctx, harness.CtrNamespace, "containers", "rm", id)
	})
	res, err := c.Ctr(ctx, harness.CtrNamespace, "tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(res.Stdout, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == id {
			pid, _ = strconv.Atoi(f[1])
		}
	}
	if pid <= 0 {
		t.Fatalf("no pid for task %s in:\n%s", id, res.Stdout)
	}
	return id, pid
}

// ctrOpen is openIn for a ctr container (ctr tasks exec).
func ctrOpen(t *testing.T, c *harness.Containerd, id, path string) string {
	t.Helper()
	res := ctrExec(t, c, id, "cat", path)
	return openOutcome(res.ExitCode, res.Stderr)
}

// openOutcome says how a `cat PATH` in a container went: ok, ENXIO, EPERM,
// ENOENT, or its exit code and stderr.
func openOutcome(exit int, stderr string) string {
	switch {
	case exit == 0:
		return "ok"
	case strings.Contains(stderr, "No such device or address"):
		return "ENXIO"
	case strings.Contains(stderr, "Operation not permitted"):
		return "EPERM"
	case strings.Contains(stderr, "No such file"):
		return "ENOENT"
	}
	return fmt.Sprintf("exit %d: %s", exit, stderr)
}

func ctrExec(t *testing.T, c *harness.Containerd, id string, args ...string) harness.CtrResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, _ := c.Ctr(ctx, harness.CtrNamespace, append([]string{"tasks", "exec", "--fifo-dir", filepath.Join(c.Dir, "fifo"),
		"--exec-id", fmt.Sprint("x", time.Now().UnixNano()), id}, args...)...)
	if res.ExitCode < 0 {
		t.Fatalf("ctr tasks exec %v did not run: %+v", args, res)
	}
	return res
}

// testAttachCtrPID: a container NRI never saw is targeted by a process in it.
func testAttachCtrPID(t *testing.T, env *gpuEnv) {
	c, d := env.c, env.d
	id, pid := ctrTask(t, c)
	if got := ctrOpen(t, c, id, "/dev/nvidia3"); got != "ENOENT" {
		t.Fatalf("before attach: open /dev/nvidia3 = %s", got)
	}
	mustCLI(t, d, "attach", "--pid", strconv.Itoa(pid), "--gpu", "3")
	for _, p := range []string{"/dev/nvidia3", "/dev/nvidiactl", "/dev/nvidia-uvm"} {
		if got := ctrOpen(t, c, id, p); got != "ENXIO" {
			t.Errorf("after attach, open %s = %s, want ENXIO", p, got)
		}
	}
	var grant *api.GPUStatus
	for _, g := range lsJSON(t, d) {
		if g.Index == 3 {
			grant = &g
		}
	}
	if grant.Grant == nil || grant.Grant.Reason != "attach" || grant.Grant.Holder.PID != pid ||
		!strings.Contains(grant.Grant.Holder.ContainerID, id) {
		t.Fatalf("hotgpu ls, GPU 3: %+v, want attach by pid %d (container %s)", grant.Grant, pid, id)
	}
	dir, err := harness.ProcessCgroupDir(pid, "devices")
	if err != nil {
		t.Fatal(err)
	}
	if list := readFile(t, filepath.Join(dir, "devices.list")); !strings.Contains(list, "c 195:3 rw") {
		t.Errorf("devices.list of the ctr container lacks GPU 3:\n%s", list)
	}

	mustCLI(t, d, "detach", "--pid", strconv.Itoa(pid), "--all")
	if got := ctrOpen(t, c, id, "/dev/nvidia3"); got != "ENOENT" {
		t.Errorf("after detach, open /dev/nvidia3 = %s, want ENOENT", got)
	}
	if res := ctrExec(t, c, id, "mknod", "/dev/nvidia3", "c", "195", "3"); res.ExitCode != 0 {
		t.Fatalf("mknod in ctr container: %+v", res)
	}
	if got := ctrOpen(t, c, id, "/dev/nvidia3"); got != "EPERM" {
		t.Errorf("self-made node after detach: %s, want EPERM", got)
	}
	if list := readFile(t, filepath.Join(dir, "devices.list")); strings.Contains(list, "c 195:") {
		t.Errorf("devices.list after detach still has a GPU rule:\n%s", list)
	}
	if _, held := d.holders(t)[3]; held {
		t.Errorf("GPU 3 still held after detach: %v", d.holders(t))
	}
}

// holdOpenSrc holds its argument open with O_PATH — the one open that works
// on a GPU node without a driver (it calls no driver code) — then touches
// its second argument and sleeps. The fd table shows the node like a CUDA
// process's /dev/nvidiaN fd does, which is what the busy check scans.
const holdOpenSrc = `package main

import (
	"os"
	"syscall"
	"time"
)

const oPath = 0x200000 // O_PATH on amd64 and arm64

func main() {
	if _, err := syscall.Open(os.Args[1], oPath, 0); err != nil {
		os.Exit(1)
	}
	if f, err := os.Create(os.Args[2]); err == nil {
		f.Close()
	}
	time.Sleep(time.Hour)
}
`

// buildHoldOpen builds the static holder once.
func buildHoldOpen(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module holdopen\n\ngo 1.21\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(holdOpenSrc), 0o644))
	cmd := exec.Command("go", "build", "-o", "holdopen", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("failed to build holdopen: %v\n%s", err, out)
	}
	return filepath.Join(dir, "holdopen")
}

// testAttachBusy: detach refuses while a process of the container holds the
// GPU's node open, names the process, changes nothing, and --force detaches
// but quarantines the GPU: listed as such, refused to attach with the
// reason, and free again once the holder exits.
func testAttachBusy(t *testing.T, env *gpuEnv) {
	c, d := env.c, env.d
	pod := c.MustRunPod(t, "busy", nil)
	ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{})
	mustCLI(t, d, "attach", "--pod", harness.PodNamespace+"/busy", "--gpu", "4")

	startHoldOpen(t, c, ctr, "/dev/nvidia4")
	list := devicesList(t, c, ctr)

	_, stderr, code := cli(t, d, "detach", "--pod", harness.PodNamespace+"/busy", "--gpu", "4")
	if code != 1 || !strings.Contains(stderr, "in use") || !strings.Contains(stderr, "--force") {
		t.Fatalf("detach of an open GPU: exit %d, %q; want exit 1 saying it is in use and how to force", code, stderr)
	}
	if got := heldBy(t, d, ctr); !slices.Equal(got, []int{4}) {
		t.Errorf("refused detach changed the ledger: %v", got)
	}
	if got := openIn(t, c, ctr, "/dev/nvidia4"); got != "ENXIO" || devicesList(t, c, ctr) != list {
		t.Errorf("refused detach changed the container: open = %s", got)
	}

	mustCLI(t, d, "detach", "--pod", harness.PodNamespace+"/busy", "--gpu", "4", "--force")
	if got := gpuNodes(t, c, ctr); len(got) != 0 {
		t.Errorf("after detach --force the container has %v", got)
	}
	if got := heldBy(t, d, ctr); len(got) != 0 {
		t.Errorf("after detach --force the ledger gives the container %v", got)
	}
	if l := devicesList(t, c, ctr); strings.Contains(l, "c 195:4") {
		t.Errorf("after detach --force devices.list still allows GPU 4:\n%s", l)
	}
	testQuarantine(t, env, ctr)
}

// testQuarantine follows testAttachBusy's forced detach: GPU 4 is still
// held by the container's holdopen.
func testQuarantine(t *testing.T, env *gpuEnv, ctr string) {
	c, d := env.c, env.d
	if got := d.holders(t)[4]; got != "quarantine:" {
		t.Fatalf("GPU 4 after detach --force with a holder left: %q, want quarantined", got)
	}
	if out := mustCLI(t, d, "ls"); !strings.Contains(out, "QUARANTINED") || !strings.Contains(out, "holdopen") {
		t.Errorf("hotgpu ls does not show GPU 4 quarantined by holdopen:\n%s", out)
	}
	_, stderr, code := cli(t, d, "attach", "--pod", harness.PodNamespace+"/busy", "--gpu", "4")
	if code != 1 || !strings.Contains(stderr, "quarantine") || !strings.Contains(stderr, "holdopen") {
		t.Fatalf("attach of a quarantined GPU: exit %d, %q; want refused, saying it is quarantined and by what", code, stderr)
	}
	if _, stderr, code := c.MustExec(t, ctr, "sh", "-c",
		`for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = holdopen ] && kill ${p#/proc/}; done; true`); code != 0 {
		t.Fatalf("stop holder: %s", stderr)
	}
	for i := 0; d.holders(t)[4] != ""; i++ {
		if i > 300 {
			t.Fatalf("GPU 4 still quarantined after its holder exited: %v", d.holders(t))
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustCLI(t, d, "attach", "--pod", harness.PodNamespace+"/busy", "--gpu", "4")
	mustCLI(t, d, "detach", "--pod", harness.PodNamespace+"/busy", "--gpu", "4")
}

// startHoldOpen starts holdopen in the container on node and waits until it
// holds it.
func startHoldOpen(t *testing.T, c *harness.Containerd, ctr, node string) {
	t.Helper()
	pid, err := c.CRI().ContainerPID(context.Background(), ctr)
	must(t, err)
	data, err := os.ReadFile(buildHoldOpen(t))
	must(t, err)
	root := fmt.Sprintf("/proc/%d/root", pid)
	must(t, os.WriteFile(root+"/holdopen", data, 0o755))
	if _, stderr, code := c.MustExec(t, ctr, "sh", "-c", "/holdopen "+node+" /ready </dev/null >/dev/null 2>&1 &"); code != 0 {
		t.Fatalf("start holder: %s", stderr)
	}
	for i := 0; ; i++ {
		if _, err := os.Stat(root + "/ready"); err == nil {
			break
		}
		if i > 500 {
			t.Fatalf("holder did not open %s", node)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testAttachBusySubCgroup: a holder in a sub-cgroup of the container (where
// a container that runs systemd or its own runtime puts its processes)
// makes detach refuse as well, named by its host pid.
func testAttachBusySubCgroup(t *testing.T, env *gpuEnv) {
	c, d := env.c, env.d
	pod := c.MustRunPod(t, "busysub", nil)
	ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{})
	mustCLI(t, d, "attach", "--pod", harness.PodNamespace+"/busysub", "--gpu", "5")
	startHoldOpen(t, c, ctr, "/dev/nvidia5")
	dir, err := c.CRI().DeviceCgroupDir(context.Background(), ctr)
	must(t, err)
	holder := processIn(t, dir, "holdopen")
	sub := filepath.Join(dir, "worker")
	must(t, os.Mkdir(sub, 0o755))
	t.Cleanup(func() { _ = syscall.Rmdir(sub) })
	must(t, os.WriteFile(filepath.Join(sub, "cgroup.procs"), []byte(strconv.Itoa(holder)), 0))

	_, stderr, code := cli(t, d, "detach", "--pod", harness.PodNamespace+"/busysub", "--gpu", "5")
	if code != 1 || !strings.Contains(stderr, "in use") || !strings.Contains(stderr, strconv.Itoa(holder)) {
		t.Fatalf("detach while pid %d in a sub-cgroup holds the GPU: exit %d, %q; want refused naming it", holder, code, stderr)
	}
	if got := heldBy(t, d, ctr); !slices.Equal(got, []int{5}) {
		t.Errorf("refused detach changed the ledger: %v", got)
	}
	must(t, syscall.Kill(holder, syscall.SIGKILL))
	for i := 0; ; i++ { // the container's sleep does not reap it: wait until its files are gone
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", holder)); err != nil || len(ents) == 0 {
			break
		}
		if i > 500 {
			t.Fatal("holder did not exit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustCLI(t, d, "detach", "--pod", harness.PodNamespace+"/busysub", "--gpu", "5")
}

// testRegrantRevoked: a GPU that something allows again in a container's
// cgroup after hotgpu detached it is revoked by the next reconcile pass.
func testRegrantRevoked(t *testing.T, env *gpuEnv) {
	c, d := env.c, env.d
	pod := c.MustRunPod(t, "regrant", nil)
	ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{})
	mustCLI(t, d, "attach", "--pod", harness.PodNamespace+"/regrant", "--gpu", "6")
	mustCLI(t, d, "detach", "--pod", harness.PodNamespace+"/regrant", "--gpu", "6")
	dir, err := c.CRI().DeviceCgroupDir(context.Background(), ctr)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(dir, "devices.allow"), []byte("c 195:6 rwm"), 0))
	for i := 0; strings.Contains(devicesList(t, c, ctr), "c 195:6 "); i++ {
		if i > 300 {
			t.Fatalf("GPU 6 re-granted after detach is still allowed:\n%s", devicesList(t, c, ctr))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := heldBy(t, d, ctr); len(got) != 0 {
		t.Errorf("the ledger gives the container %v", got)
	}
}

// processIn finds the host pid of the process called name in the cgroup
// dir (a devices cgroup of a container).
func processIn(t *testing.T, dir, name string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	must(t, err)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) != name {
			continue
		}
		if cg, err := harness.ProcessCgroupDir(pid, "devices"); err == nil && cg == dir {
			return pid
		}
	}
	t.Fatalf("no process %s in %s", name, dir)
	return 0
}

// testAttachSymlinks: a container points /dev/nvidiaN, /dev/nvidiactl or
// /dev itself at a path that exists only on the host. hotgpu resolves every
// path inside the container without following symlinks: attach fails
// cleanly, the host path is untouched, the ledger and cgroup are unchanged.
func testAttachSymlinks(t *testing.T, env *gpuEnv) {
	c, d := env.c, env.d
	hostDir := t.TempDir() // exists on the host, not in any container
	hostFile := filepath.Join(hostDir, "secret")
	must(t, os.WriteFile(hostFile, []byte("host data\n"), 0o600))
	checkHost := func(t *testing.T) {
		t.Helper()
		ents, _ := os.ReadDir(hostDir)
		st, err := os.Stat(hostFile)
		b, _ := os.ReadFile(hostFile)
		if len(ents) != 1 || err != nil || st.Mode() != 0o600 || string(b) != "host data\n" {
			t.Errorf("host path touched: %d entries in %s, %s mode %v, content %q", len(ents), hostDir, hostFile, st.Mode(), b)
		}
	}
	for i, tc := range []struct {
		name   string
		caps   []string
		attack string
	}{
		{"GPU node", nil, "ln -s " + hostFile + " /dev/nvidia5"},
		{"control node", nil, "ln -s " + hostFile + " /dev/nvidiactl"},
		// Without SYS_ADMIN /dev is a mount point that cannot be replaced.
		// (CRI takes capability names without the CAP_ prefix.)
		{"dev dir", []string{"SYS_ADMIN"}, "umount -l /dev && rm -rf /dev && ln -s " + hostDir + " /dev"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprint("sym", i)
			pod := c.MustRunPod(t, name, nil)
			ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{AddCaps: tc.caps})
			before := devicesList(t, c, ctr)
			if _, stderr, code := c.MustExec(t, ctr, "sh", "-c", tc.attack); code != 0 {
				t.Fatalf("attack %q: %s", tc.attack, stderr)
			}
			_, stderr, code := cli(t, d, "attach", "--pod", harness.PodNamespace+"/"+name, "--gpu", "5")
			if code != 1 || !strings.Contains(stderr, "unsafe path in container") {
				t.Errorf("attach through a symlink: exit %d, %q; want a failure naming the unsafe path", code, stderr)
			}
			checkHost(t)
			if got := heldBy(t, d, ctr); len(got) != 0 {
				t.Errorf("failed attach left the ledger giving the container %v", got)
			}
			if after := devicesList(t, c, ctr); after != before {
				t.Errorf("failed attach changed devices.list:\n%s\nwant:\n%s", after, before)
			}
			if tc.name == "control node" { // the GPU node was made first: rolled back
				if got := gpuNodes(t, c, ctr); len(got) != 0 {
					t.Errorf("rollback left %v in the container", got)
				}
			}
		})
	}

	// After a good attach, the container swaps its node for a symlink to
	// the host file: detach must take the GPU away and leave the file alone.
	t.Run("swap after attach", func(t *testing.T) {
		pod := c.MustRunPod(t, "swap", nil)
		ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{})
		before := devicesList(t, c, ctr)
		mustCLI(t, d, "attach", "--pod", harness.PodNamespace+"/swap", "--gpu", "6")
		if _, stderr, code := c.MustExec(t, ctr, "sh", "-c", "rm /dev/nvidia6 && ln -s "+hostFile+" /dev/nvidia6"); code != 0 {
			t.Fatalf("swap: %s", stderr)
		}
		out, stderr, code := cli(t, d, "detach", "--pod", harness.PodNamespace+"/swap", "--gpu", "6")
		t.Logf("detach after swap: exit %d, %s%s", code, out, stderr)
		checkHost(t)
		if code != 0 {
			t.Errorf("detach refused because the container replaced its node (exit %d: %s): a container must not be able to keep a GPU that way", code, stderr)
		}
		if got := heldBy(t, d, ctr); len(got) != 0 {
			t.Errorf("ledger still gives the container %v", got)
		}
		if after := devicesList(t, c, ctr); after != before {
			t.Errorf("devices.list after detach:\n%s\nwant:\n%s", after, before)
		}
	})
}

// TestAttachCrash kills hotgpud (SIGKILL, from inside, on demand) at every
// step of an attach and of a detach. After a restart the cgroup, the nodes
// in the container and the ledger agree: the GPU is not granted, and it can
// be attached again.
func TestAttachCrash(t *testing.T) {
	c := harness.StartContainerd(t, harness.Options{Bins: harness.Deps(t)})
	d := startHotgpudBin(t, c, buildBin(t, "./cmd/hotgpud", "hotgpu_failpoints"))
	pod := c.MustRunPod(t, "crash", nil)
	ctr := c.MustRunContainer(t, pod, "app", harness.ContainerOptions{})
	target := []string{"--pod", harness.PodNamespace + "/crash"}
	clean := devicesList(t, c, ctr)
	ledgerFile := filepath.Join(d.dir, "state", "ledger.json")
	intentFile := filepath.Join(d.dir, "state", "ledger.intent.json")

	restart := func(failpoint string) {
		t.Helper()
		d.stop()
		d.env = nil
		if failpoint != "" {
			d.env = []string{"HOTGPU_FAILPOINT=" + failpoint}
		}
		d.start()
	}
	// What a crash at each step leaves: {cgroup rule, node in the container}.
	// Attach makes the node first and reserves the GPU with its record in one
	// write, so the node is there from the first step on.
	half := map[string][2]bool{
		"reserved": {false, true}, "granted": {true, true},
		"revoked": {false, true}, "removed": {false, false},
	}
	for _, step := range []string{"reserved", "granted", "revoked", "removed"} {
		t.Run(step, func(t *testing.T) {
			op := "attach"
			if step == "revoked" || step == "removed" {
				op = "detach"
				mustCLI(t, d, append([]string{"attach", "--gpu", "2"}, target...)...)
			}
			restart(step)
			args := append([]string{op, "--gpu", "2"}, target...)
			if _, stderr, code := cli(t, d, args...); code == 0 || !strings.Contains(stderr, "hotgpud") {
				t.Fatalf("%s with hotgpud dying at %s: exit %d, %q", op, step, code, stderr)
			}
			if err := d.waitExit(15 * time.Second); err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("hotgpud did not die at %s: %v", step, err)
			}
			// the write-ahead record is in the intent file (no fsync), or in
			// the ledger itself when it was the first write of all
			intent, _ := os.ReadFile(intentFile)
			if s := readFile(t, ledgerFile); !strings.Contains(s+string(intent), `"pending"`) {
				t.Fatalf("crash at %s left no pending grant to recover; ledger:\n%s\nintent:\n%s", step, s, intent)
			}
			// The crash really left a half grant behind for the restart to undo.
			rule := strings.Contains(devicesList(t, c, ctr), "c 195:2 rw")
			node := slices.Contains(gpuNodes(t, c, ctr), "nvidia2")
			if want := half[step]; rule != want[0] || node != want[1] {
				t.Fatalf("after crash at %s: cgroup rule %v, node %v; want %v, %v", step, rule, node, want[0], want[1])
			}

			restart("")
			if h := d.holders(t); len(h) != 0 {
				t.Errorf("after crash at %s and restart, ledger = %v, want nothing held", step, h)
			}
			if s := readFile(t, ledgerFile); strings.Contains(s, "GPU-") {
				t.Errorf("ledger file still records a grant:\n%s", s)
			}
			if _, err := os.Stat(intentFile); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the intent file is still there after the recovery: %v", err)
			}
			if got := devicesList(t, c, ctr); got != clean {
				t.Errorf("devices.list after crash at %s and restart:\n%s\nwant:\n%s", step, got, clean)
			}
			if got := append(gpuNodes(t, c, ctr), controlNodes(t, c, ctr)...); len(got) != 0 {
				t.Errorf("nodes left in the container after crash at %s: %v", step, got)
			}
			// Nothing half-granted blocks the GPU: it attaches and detaches again.
			mustCLI(t, d, append([]string{"attach", "--gpu", "2"}, target...)...)
			mustCLI(t, d, append([]string{"detach", "--gpu", "2"}, target...)...)
		})
	}
}
