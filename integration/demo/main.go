// Command demo is hotgpu's guided tour on a machine without a GPU: it starts
// a private, real containerd (NRI and CDI on), hotgpud on 8 simulated A100s,
// a pod that asks for one GPU by annotation, then attaches a second GPU to
// the running pod and detaches it again with the hotgpu CLI, showing the
// container's /dev and `hotgpu ls` at each step. It removes everything it
// made — pod, containerd, hotgpud, temp dirs — on success, error or Ctrl-C.
//
// Run it as root from the repository with `make demo`, which builds bin/ and
// the cached containerd/runc first. It is not a test: integration/ tests
// check the same things with assertions.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/hotgpu/hotgpu/integration/harness"
	"github.com/hotgpu/hotgpu/internal/api"
)

const (
	podNamespace = "demo"
	podName      = "trainer"
	ctrName      = "app"
	annotation   = "gpus.hotgpu.dev/container." + ctrName
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "\ninterrupted: cleaning up")
		cancel()
		for range sigs {
			fmt.Fprintln(os.Stderr, "still cleaning up, one moment")
		}
	}()
	start := time.Now()
	d := &demo{}
	err := d.run(ctx)
	cerr := d.cleanup()
	interrupted := ctx.Err() != nil
	cancel()
	switch {
	case interrupted && cerr == nil:
		fmt.Fprintln(os.Stderr, "demo interrupted; everything it made is removed")
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
	case cerr != nil:
		fmt.Fprintf(os.Stderr, "\ndemo ran, but cleanup failed: %v\n", cerr)
	default:
		fmt.Printf("\nEverything the demo made is gone (pod, containerd, hotgpud, temp dirs). Total %.1fs.\n", time.Since(start).Seconds())
		return
	}
	if cerr != nil && err != nil {
		fmt.Fprintf(os.Stderr, "cleanup also failed: %v\n", cerr)
	}
	os.Exit(1)
}

type demo struct {
	dir     string // temp dir: hotgpud state, socket and log
	bin     string // repo bin/ with hotgpud and hotgpu
	c       *harness.Containerd
	hotgpud *exec.Cmd
	exited  chan struct{}
	socket  string
	ctr     string
}

func (d *demo) run(ctx context.Context) error {
	var err error
	if d.bin, err = binDir(); err != nil {
		return err
	}
	if d.dir, err = os.MkdirTemp("", "hotgpu-demo-"); err != nil {
		return err
	}
	d.socket = filepath.Join(d.dir, "hotgpu.sock")

	header("1. A real containerd (v2.2, runc), NRI and CDI on, no GPU on this machine")
	bins, took, err := harness.BuildDeps(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("\ncontainerd, ctr, runc and two tiny images ready in %v (cached in %s)\n", took.Round(time.Millisecond), filepath.Dir(filepath.Dir(bins.Dir)))
	t := time.Now()
	if d.c, err = harness.Start(ctx, harness.Options{Bins: bins}); err != nil {
		return err
	}
	fmt.Printf("containerd up on %s in %v\n", d.c.Address, time.Since(t).Round(time.Millisecond))

	header("2. hotgpud on 8 simulated A100s (NVSwitch), plugged into containerd over NRI")
	if err := d.startHotgpud(ctx); err != nil {
		return err
	}
	fmt.Printf("(every hotgpu command below also gets --socket %s)\n", d.socket)
	if err := d.hotgpu(ctx, "status"); err != nil {
		return err
	}

	header("3. A pod asks for one GPU with an annotation")
	if err := d.startPod(ctx); err != nil {
		return err
	}
	if err := d.showDev(ctx); err != nil {
		return err
	}
	if err := d.hotgpu(ctx, "ls"); err != nil {
		return err
	}

	header("4. Attach a second GPU to the running pod: no restart, no mknod in the image")
	out, err := d.hotgpuOut(ctx, "attach", "--pod", podNamespace+"/"+podName, "--count", "1")
	if err != nil {
		return err
	}
	m := regexp.MustCompile(`attached GPU (\d+)`).FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("hotgpu attach said %q: no GPU attached", out)
	}
	gpu := m[1]
	if err := d.showDev(ctx); err != nil {
		return err
	}
	fmt.Println("\nOpening it reaches the (absent) driver: the device cgroup lets it through.")
	if err := d.inPod(ctx, "cat /dev/nvidia"+gpu); err != nil {
		return err
	}
	if err := d.hotgpu(ctx, "ls"); err != nil {
		return err
	}

	header("5. Detach it again")
	if _, err := d.hotgpuOut(ctx, "detach", "--pod", podNamespace+"/"+podName, "--gpu", gpu); err != nil {
		return err
	}
	if err := d.showDev(ctx); err != nil {
		return err
	}
	fmt.Println("\nA node the container makes itself is refused by the device cgroup:")
	if err := d.inPod(ctx, fmt.Sprintf("mknod /dev/nvidia%s c 195 %s && cat /dev/nvidia%s", gpu, gpu, gpu)); err != nil {
		return err
	}
	if err := d.hotgpu(ctx, "ls"); err != nil {
		return err
	}
	header("Cleaning up")
	return nil
}

func header(s string) { fmt.Printf("\n== %s ==\n", s) }

// binDir finds bin/ with hotgpud and hotgpu from the repository root, or
// takes the dir in HOTGPU_BIN (the demo's test builds them elsewhere).
func binDir() (string, error) {
	if dir := os.Getenv("HOTGPU_BIN"); dir != "" {
		return dir, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		bin := filepath.Join(dir, "bin")
		if _, err := os.Stat(filepath.Join(bin, "hotgpud")); err == nil {
			if _, err := os.Stat(filepath.Join(bin, "hotgpu")); err == nil {
				return bin, nil
			}
		}
	}
	return "", errors.New("bin/hotgpud and bin/hotgpu not found: run the demo with `make demo`, which builds them")
}

func (d *demo) startHotgpud(ctx context.Context) error {
	args := []string{
		"--simulate", "dgxa100",
		"--annotation-namespaces", podNamespace,
		"--nri-socket", d.c.NRISocket,
		"--cdi-dir", d.c.CDIDir,
		"--state-dir", filepath.Join(d.dir, "state"),
		"--api-socket", d.socket,
		"--no-device-plugin", // no kubelet in the demo
	}
	fmt.Printf("\n$ hotgpud %s\n", strings.Join(args, " "))
	logPath := filepath.Join(d.dir, "hotgpud.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(d.bin, "hotgpud"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group keeps a terminal's Ctrl-C for us; it dies with us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("failed to start hotgpud: %w", err)
	}
	d.hotgpud, d.exited = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); close(d.exited) }()

	client := api.NewClient(d.socket)
	deadline := time.Now().Add(30 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := client.Status(sctx)
		cancel()
		if err == nil && st.NRIConnected {
			return nil
		}
		select {
		case <-d.exited:
			return fmt.Errorf("hotgpud exited; its log:\n%s", readTail(logPath))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hotgpud did not connect to containerd within 30s; its log:\n%s", readTail(logPath))
		}
	}
}

func (d *demo) startPod(ctx context.Context) error {
	fmt.Printf("\npod %s/%s, annotation %s: \"1\"\n", podNamespace, podName, annotation)
	cri := d.c.CRI()
	pod, err := cri.RunPod(ctx, podName, podNamespace, "", map[string]string{annotation: "1"})
	if err != nil {
		return err
	}
	t := time.Now()
	if d.ctr, err = cri.RunContainer(ctx, pod, ctrName, harness.ContainerOptions{}); err != nil {
		return err
	}
	fmt.Printf("container %s (busybox, `sleep`) running after %v; hotgpud gave it its GPU over NRI\n", ctrName, time.Since(t).Round(time.Millisecond))
	return nil
}

// showDev lists the NVIDIA nodes inside the pod's container.
func (d *demo) showDev(ctx context.Context) error {
	return d.inPod(ctx, "ls -l /dev/nvidia*")
}

// inPod runs a shell command in the container (CRI exec) and prints it and
// its output; a failing command is shown, not an error.
func (d *demo) inPod(ctx context.Context, script string) error {
	fmt.Printf("\n%s/%s$ %s\n", podNamespace, podName, script)
	stdout, stderr, _, err := d.c.CRI().Exec(ctx, d.ctr, "sh", "-c", script)
	if err != nil {
		return err
	}
	fmt.Print(indent(stdout + stderr))
	return nil
}

// hotgpu runs the real CLI and prints the command and its output.
func (d *demo) hotgpu(ctx context.Context, args ...string) error {
	_, err := d.hotgpuOut(ctx, args...)
	return err
}

func (d *demo) hotgpuOut(ctx context.Context, args ...string) (string, error) {
	fmt.Printf("\n$ hotgpu %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "hotgpu"), append(args, "--socket", d.socket)...)
	t := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(t)
	fmt.Print(indent(string(out)))
	if err != nil {
		return "", fmt.Errorf("hotgpu %s: %w", args[0], err)
	}
	if args[0] == "attach" || args[0] == "detach" {
		fmt.Printf("  (%s took %.1f ms, CLI start to exit)\n", args[0], float64(took.Microseconds())/1000)
	}
	return string(out), nil
}

// cleanup removes everything, whatever state run reached. containerd goes
// first, while hotgpud still hears the pod's removal over NRI.
func (d *demo) cleanup() error {
	var errs []error
	if d.c != nil {
		errs = append(errs, d.c.Cleanup())
	}
	if d.hotgpud != nil {
		_ = d.hotgpud.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			_ = d.hotgpud.Process.Kill()
			<-d.exited
		}
	}
	if d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	return errors.Join(errs...)
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ") + "\n"
}

func readTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}
