package bench

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/attach"
)

// liveSamples are figure 2's measurements.
type liveSamples struct {
	apiAttach, apiDetach, cliAttach, cliDetach, recreateWith, recreateWithout Sample
}

// LiveAttach is figure 2: giving a running container a GPU and taking it
// away, through hotgpud's API and CLI, against what users do today — stop
// the container and create it again with (or without) the GPU. Rounds
// interleave apiPerRound API pairs, one CLI pair and one re-creation each way.
func LiveAttach(ctx context.Context, e *Env, hotgpuCLI string, rounds, apiPerRound int) (*Section, error) {
	s := &Section{Title: "Live attach / detach"}
	pod, _, err := e.PodsA.Start(ctx, PodSpec{})
	if err != nil {
		return nil, err
	}
	defer e.PodsA.Remove(ctx, pod)
	other, _, err := e.PodsB.Start(ctx, PodSpec{})
	if err != nil {
		return nil, err
	}
	defer e.PodsB.Remove(ctx, other)
	if err := checkAttach(ctx, e, pod); err != nil {
		return nil, err
	}
	var ls liveSamples
	target := attach.Target{ContainerID: pod.Container}
	for r := 0; r < rounds; r++ {
		for i := 0; i < apiPerRound; i++ {
			a, d, err := apiPair(ctx, e.Daemon.API, target)
			if err != nil {
				return nil, err
			}
			ls.apiAttach, ls.apiDetach = append(ls.apiAttach, a), append(ls.apiDetach, d)
		}
		a, d, err := cliPair(ctx, hotgpuCLI, e.Daemon.Socket, pod.Container)
		if err != nil {
			return nil, err
		}
		ls.cliAttach, ls.cliDetach = append(ls.cliAttach, a), append(ls.cliDetach, d)
		with, err := e.PodsB.Recreate(ctx, other, PodSpec{CDIDevices: []string{"nvidia.com/gpu=1"}})
		if err != nil {
			return nil, err
		}
		without, err := e.PodsB.Recreate(ctx, other, PodSpec{})
		if err != nil {
			return nil, err
		}
		ls.recreateWith, ls.recreateWithout = append(ls.recreateWith, with), append(ls.recreateWithout, without)
	}
	addLiveRows(s, &ls, rounds, apiPerRound)
	return s, nil
}

// checkAttach proves once, untimed, that an attach really makes the GPU
// usable inside the container and a detach takes it away.
func checkAttach(ctx context.Context, e *Env, pod *Pod) error {
	t := attach.Target{ContainerID: pod.Container}
	if _, err := e.Daemon.API.Attach(ctx, api.AttachRequest{Target: t, IDs: []string{"1"}}); err != nil {
		return fmt.Errorf("live attach failed: %w\nGPUs: %s\nhotgpud log:\n%s", err, holders(ctx, e.Daemon.API), e.Daemon.LogTail())
	}
	out, err := e.PodsA.Exec(ctx, pod, "cat", "/dev/nvidia1")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "No such device or address") {
		return fmt.Errorf("after attach /dev/nvidia1 is not usable in the container: cat said %q", strings.TrimSpace(out))
	}
	if _, err := e.Daemon.API.Detach(ctx, api.DetachRequest{Target: t, IDs: []string{"1"}}); err != nil {
		return fmt.Errorf("live detach failed: %w", err)
	}
	if out, _ = e.PodsA.Exec(ctx, pod, "cat", "/dev/nvidia1"); strings.Contains(out, "No such device or address") {
		return fmt.Errorf("after detach /dev/nvidia1 is still usable in the container")
	}
	return nil
}

func apiPair(ctx context.Context, c *api.Client, t attach.Target) (time.Duration, time.Duration, error) {
	start := time.Now()
	if _, err := c.Attach(ctx, api.AttachRequest{Target: t, IDs: []string{"1"}}); err != nil {
		return 0, 0, fmt.Errorf("live attach failed: %w", err)
	}
	mid := time.Now()
	if _, err := c.Detach(ctx, api.DetachRequest{Target: t, IDs: []string{"1"}}); err != nil {
		return 0, 0, fmt.Errorf("live detach failed: %w", err)
	}
	return mid.Sub(start), time.Since(mid), nil
}

func cliPair(ctx context.Context, cli, socket, id string) (time.Duration, time.Duration, error) {
	run := func(verb string) (time.Duration, error) {
		start := time.Now()
		out, err := exec.CommandContext(ctx, cli, verb, "--container", id, "--gpu", "1", "--socket", socket).CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("hotgpu %s failed: %w: %s", verb, err, out)
		}
		return time.Since(start), nil
	}
	a, err := run("attach")
	if err != nil {
		return 0, 0, err
	}
	d, err := run("detach")
	return a, d, err
}

func addLiveRows(s *Section, ls *liveSamples, rounds, apiPerRound int) {
	p := func(x Sample) string {
		return fmt.Sprintf("p50 %s, p99 %s", FormatDuration(x.Median()), FormatDuration(x.Percentile(99)))
	}
	rw, rwo := ls.recreateWith.Median(), ls.recreateWithout.Median()
	base := func(d time.Duration, what string) string {
		return fmt.Sprintf("stop + re-create container %s (CRI, containerd CDI): p50 %s", what, FormatDuration(d))
	}
	how := fmt.Sprintf("%d rounds on a running busybox pod, each: %d API attach+detach pairs, 1 CLI pair, 1 re-creation with and 1 without the GPU (on the no-plugin containerd); GPU 1 by index; p99 = nearest rank", rounds, apiPerRound)
	s.Add(Row{Figure: "live attach, API (unix socket HTTP round trip)", Hotgpu: p(ls.apiAttach), Baseline: base(rw, "with the GPU"),
		Ratio: FormatRatio(Ratio(ls.apiAttach.Median(), rw)), Target: "p50 < 10 ms", How: how})
	s.Add(Row{Figure: "live detach, API", Hotgpu: p(ls.apiDetach), Baseline: base(rwo, "without it"),
		Ratio: FormatRatio(Ratio(ls.apiDetach.Median(), rwo)), Target: "p50 < 10 ms", How: "same rounds; includes the busy check (scan of /proc for open GPU files)"})
	s.Add(Row{Figure: "live attach, CLI (`hotgpu attach`, process start to exit)", Hotgpu: p(ls.cliAttach), Baseline: base(rw, "with the GPU"),
		Ratio: FormatRatio(Ratio(ls.cliAttach.Median(), rw)), Target: "p50 < 10 ms", How: "same rounds"})
	s.Add(Row{Figure: "live detach, CLI", Hotgpu: p(ls.cliDetach), Baseline: base(rwo, "without it"),
		Ratio: FormatRatio(Ratio(ls.cliDetach.Median(), rwo)), Target: "p50 < 10 ms", How: "same rounds; the re-created container also lost its processes and memory, which a live attach keeps"})
}

// holders lists who holds which GPU, for error messages.
func holders(ctx context.Context, c *api.Client) string {
	gpus, err := c.GPUs(ctx)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, g := range gpus {
		if g.Grant != nil {
			fmt.Fprintf(&b, "%d:%s:%+v ", g.Index, g.Grant.Reason, g.Grant.Holder)
		}
	}
	return b.String()
}
