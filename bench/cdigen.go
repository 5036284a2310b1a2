package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FakeDriverRoot makes a driver and dev root with 8 GPU nodes, the control
// nodes and empty driver libraries (550.54.15) — all nvidia-ctk's management
// mode and hotgpu's generator look at when there is no NVML.
func FakeDriverRoot(dir string) error {
	libs := filepath.Join(dir, "usr/lib/x86_64-linux-gnu")
	for _, d := range []string{filepath.Join(dir, "dev"), libs, filepath.Join(dir, "usr/bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	nodes := map[string][2]uint32{"nvidiactl": {195, 255}, "nvidia-uvm": {511, 0}, "nvidia-uvm-tools": {511, 1}}
	for i := uint32(0); i < 8; i++ {
		nodes[fmt.Sprintf("nvidia%d", i)] = [2]uint32{195, i}
	}
	for name, mm := range nodes {
		if err := unix.Mknod(filepath.Join(dir, "dev", name), unix.S_IFCHR|0o666, int(unix.Mkdev(mm[0], mm[1]))); err != nil {
			return fmt.Errorf("failed to make fake device node %s (needs root): %w", name, err)
		}
	}
	for _, f := range []string{"libcuda.so.550.54.15", "libnvidia-ml.so.550.54.15", "libnvidia-ptxjitcompiler.so.550.54.15",
		"libnvidia-nvvm.so.550.54.15", "libnvidia-glcore.so.550.54.15"} {
		if err := os.WriteFile(filepath.Join(libs, f), nil, 0o644); err != nil {
			return err
		}
	}
	links := map[string]string{"libcuda.so.1": "libcuda.so.550.54.15", "libcuda.so": "libcuda.so.1",
		"libnvidia-ml.so.1": "libnvidia-ml.so.550.54.15", "libnvidia-ptxjitcompiler.so.1": "libnvidia-ptxjitcompiler.so.550.54.15",
		"libnvidia-nvvm.so.4": "libnvidia-nvvm.so.550.54.15"}
	for link, target := range links {
		if err := os.Symlink(target, filepath.Join(libs, link)); err != nil {
			return err
		}
	}
	for _, f := range []string{"nvidia-smi", "nvidia-debugdump"} {
		if err := os.WriteFile(filepath.Join(dir, "usr/bin", f), nil, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// ProcRun is one run of a program: wall time and peak resident memory.
type ProcRun struct {
	Wall    time.Duration
	PeakRSS int64
}

// RunProc runs a program to completion, discarding its output.
func RunProc(ctx context.Context, bin string, args ...string) (ProcRun, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return ProcRun{}, fmt.Errorf("%s %v failed: %w\n%s", filepath.Base(bin), args, err, lastLines(stderr.String(), 10))
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	var peak int64
	if ru != nil {
		peak = ru.Maxrss << 10 // KiB on Linux
	}
	return ProcRun{Wall: wall, PeakRSS: peak}, nil
}

// SpecGeneration is figure 3: hotgpu's CDI generator against nvidia-ctk's,
// both as the command a user runs, on the same fake root, interleaved.
func SpecGeneration(ctx context.Context, t *Tools, work string, runs int) *Section {
	s := &Section{Title: "CDI spec generation, 8 GPUs"}
	root := filepath.Join(work, "driver-root")
	if err := FakeDriverRoot(root); err != nil {
		s.Note("no fake driver root: %v", err)
		return s
	}
	hot := []string{"cdi", "generate", "--simulate", "dgxa100", "--driver-root", root, "--dev-root", root}
	nv := []string{"cdi", "generate", "--mode", "management", "--dev-root", root, "--driver-root", root}
	var hw, nw Sample
	var hr, nr []int64
	for i := 0; i < runs; i++ {
		h, err := RunProc(ctx, t.Hotgpu, hot...)
		if err != nil {
			s.Note("hotgpu cdi generate failed: %v", err)
			return s
		}
		hw, hr = append(hw, h.Wall), append(hr, h.PeakRSS)
		if t.NvidiaCTK == "" {
			continue
		}
		n, err := RunProc(ctx, t.NvidiaCTK, nv...)
		if err != nil {
			s.Note("nvidia-ctk cdi generate failed, so it has no figure: %v", err)
			t.NvidiaCTK = ""
			continue
		}
		nw, nr = append(nw, n.Wall), append(nr, n.PeakRSS)
	}
	how := fmt.Sprintf("%d runs each, interleaved, of the CLI as a user runs it (process start to exit; peak RSS from wait4): `hotgpu %s` vs `nvidia-ctk %s`, same fake root (8 GPU nodes, control nodes, empty 550.54.15 libraries); hotgpu reads a simulated NVML, nvidia-ctk's management mode reads no NVML",
		runs, join(hot), join(nv))
	row := Row{Figure: "spec generation, wall time (CLI)", Hotgpu: FormatDuration(hw.Median()), How: how, Target: "faster than nvidia-ctk"}
	mem := Row{Figure: "spec generation, peak RSS (CLI)", Hotgpu: MiB(medianInt(hr)), How: "same runs"}
	if len(nw) > 0 {
		row.Baseline, row.Ratio = "nvidia-ctk v1.20.1: "+FormatDuration(nw.Median()), FormatRatio(MedianRatio(hw, nw))
		mem.Baseline = "nvidia-ctk v1.20.1: " + MiB(medianInt(nr))
		mem.Ratio = FormatRatio(float64(medianInt(hr)) / float64(medianInt(nr)))
	} else {
		row.Baseline, mem.Baseline = "nvidia-ctk: not built (see below)", "—"
	}
	s.Add(row)
	s.Add(mem)
	return s
}

func join(args []string) string {
	var b bytes.Buffer
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if filepath.IsAbs(a) {
			a = "R"
		}
		b.WriteString(a)
	}
	return b.String()
}

func medianInt(v []int64) int64 {
	s := make(Sample, len(v))
	for i, x := range v {
		s[i] = time.Duration(x)
	}
	return int64(s.Median())
}
