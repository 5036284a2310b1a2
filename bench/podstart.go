package bench

import (
	"context"
	"fmt"
	"strings"
)

// annotation asks hotgpud for one GPU for container "app".
var annotation = map[string]string{"gpus.hotgpu.dev/container.app": "1"}

type podVariant struct {
	name string
	pods *Pods
	spec PodSpec
	gpu  bool // the container must have one usable GPU node (checked once, untimed)
}

// PodStart is figure 1: CRI pod + container create + start, hotgpu's NRI
// injection against no injection, containerd's CDI injection and NVIDIA's
// runtime, interleaved round by round with the order rotated every round.
func PodStart(ctx context.Context, e *Env, rounds int, calib map[string]Sample) (*Section, error) {
	s := &Section{Title: "Pod start with 1 GPU"}
	vs := []podVariant{
		{name: "none", pods: e.PodsB},
		{name: "hotgpu", pods: e.PodsA, spec: PodSpec{Annotations: annotation}, gpu: true},
		{name: "hotgpu-nogpu", pods: e.PodsA},
		{name: "cdi", pods: e.PodsB, spec: PodSpec{CDIDevices: []string{"nvidia.com/gpu=0"}}, gpu: true},
	}
	if e.NvidiaErr == nil {
		vs = append(vs, podVariant{name: "nvidia", pods: e.PodsB, gpu: true,
			spec: PodSpec{Handler: NvidiaHandler, Env: map[string]string{"NVIDIA_VISIBLE_DEVICES": "0"}}})
	} else {
		s.Note("nvidia-container-runtime: %v", e.NvidiaErr)
	}
	for i := 0; i < len(vs); i++ {
		if err := checkVariant(ctx, vs[i]); err != nil {
			if vs[i].name != "nvidia" {
				return nil, fmt.Errorf("pod variant %s: %w", vs[i].name, err)
			}
			s.Note("nvidia-container-runtime v1.20.1 could not start a pod with the GPU here: %v", err)
			vs = vs[:i]
		}
	}
	res, err := interleave(ctx, vs, rounds)
	if err != nil {
		return nil, err
	}
	addPodRows(s, res, rounds, calib)
	return s, nil
}

// checkVariant starts one untimed pod (a warm-up) and checks the GPU is there.
func checkVariant(ctx context.Context, v podVariant) error {
	pod, _, err := v.pods.Start(ctx, v.spec)
	if err != nil {
		return err
	}
	defer v.pods.Remove(ctx, pod)
	if !v.gpu {
		return nil
	}
	// hotgpud picks the GPU for a count request: accept any one GPU node.
	out, err := v.pods.Exec(ctx, pod, "sh", "-c", "ls /dev/nvidia[0-7] && cat /dev/nvidia[0-7]")
	if err != nil {
		return err
	}
	// ENXIO: the node exists and the device cgroup allows it; no driver here.
	if strings.Count(out, "/dev/nvidia") != 2 || !strings.Contains(out, "No such device or address") {
		return fmt.Errorf("the container does not have exactly one usable GPU node: %q", strings.TrimSpace(out))
	}
	return nil
}

// interleave runs every variant once per round, rotating the order.
func interleave(ctx context.Context, vs []podVariant, rounds int) (map[string]Sample, error) {
	res := map[string]Sample{}
	for r := 0; r < rounds; r++ {
		for k := range vs {
			v := vs[(r+k)%len(vs)]
			pod, took, err := v.pods.Start(ctx, v.spec)
			if err != nil {
				return nil, fmt.Errorf("pod variant %s, round %d: %w", v.name, r, err)
			}
			res[v.name] = append(res[v.name], took)
			if err := v.pods.Remove(ctx, pod); err != nil {
				return nil, fmt.Errorf("pod variant %s, round %d: %w", v.name, r, err)
			}
		}
	}
	return res, nil
}

// Calibrate runs plain pods on A and B, interleaved, before hotgpud is
// plugged in: the ratio of two identical instances is the floor under which
// figure 1's ratios mean nothing.
func Calibrate(ctx context.Context, e *Env, rounds int) (map[string]Sample, error) {
	return interleave(ctx, []podVariant{{name: "A", pods: e.PodsA}, {name: "B", pods: e.PodsB}}, rounds)
}

func addPodRows(s *Section, res map[string]Sample, rounds int, calib map[string]Sample) {
	how := fmt.Sprintf("CRI RunPodSandbox+CreateContainer+StartContainer (busybox, host network) on containerd v2.2.9 + runc, timed at the client; %d rounds, variants interleaved with the order rotated; ratio = median of per-round ratios", rounds)
	none, hot := res["none"], res["hotgpu"]
	s.Add(Row{Figure: "pod+container start, no GPU, no NRI plugin", Hotgpu: "—", Baseline: "no plugin: " + FormatDuration(none.Median()), How: how})
	s.Add(Row{Figure: "pod+container start, 1 GPU by hotgpud (pod annotation, NRI)", Hotgpu: FormatDuration(hot.Median()),
		Baseline: "no plugin, no GPU: " + FormatDuration(none.Median()), Ratio: FormatRatio(MedianRatio(hot, none)), Target: "≤ 1.02×", How: "same rounds"})
	if n, ok := res["nvidia"]; ok {
		s.Add(Row{Figure: "… vs NVIDIA's way", Hotgpu: FormatDuration(hot.Median()),
			Baseline: "nvidia-container-runtime v1.20.1 (cdi mode, runc wrapper, NVIDIA_VISIBLE_DEVICES=0, same spec): " + FormatDuration(n.Median()),
			Ratio:    FormatRatio(MedianRatio(hot, n)), Target: "< 1× (faster)", How: "same rounds; nvidia / no plugin = " + FormatRatio(MedianRatio(n, none))})
	}
	if c, ok := res["cdi"]; ok {
		s.Add(Row{Figure: "… vs containerd's own CDI injection (reference)", Hotgpu: FormatDuration(hot.Median()),
			Baseline: "CRI CDIDevices nvidia.com/gpu=0, same spec: " + FormatDuration(c.Median()),
			Ratio:    FormatRatio(MedianRatio(hot, c)), How: "same rounds; CDI / no plugin = " + FormatRatio(MedianRatio(c, none))})
	}
	ng := res["hotgpu-nogpu"]
	s.Add(Row{Figure: "pod without GPU on a node running hotgpud", Hotgpu: FormatDuration(ng.Median()),
		Baseline: "no plugin: " + FormatDuration(none.Median()), Ratio: FormatRatio(MedianRatio(ng, none)), Target: "≤ 1.02×", How: "same rounds: what every other pod pays for the NRI hook"})
	if a, b := calib["A"], calib["B"]; len(a) > 0 {
		s.Add(Row{Figure: "noise floor: instance A vs B, both without plugin", Hotgpu: "A: " + FormatDuration(a.Median()),
			Baseline: "B: " + FormatDuration(b.Median()), Ratio: FormatRatio(MedianRatio(a, b)),
			How: fmt.Sprintf("%d interleaved rounds before hotgpud was plugged into A: hotgpu's variants run on A, the others on B", len(a))})
	}
}
