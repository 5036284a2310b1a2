// Command hotgpu-bench runs hotgpu's benchmarks side by side with the
// alternatives on this machine and writes bench/RESULTS.md (`make bench`).
// It needs root: it runs two private containerds, hotgpud and real pods.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hotgpu/hotgpu/bench"
)

type options struct {
	out                       string
	podRounds, calibRounds    int
	liveRounds, apiPerRound   int
	cdiRuns, containers       int
	goCount, integrationCount int
	clusterCount              int
	benchtime                 string
	idle                      time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.out, "out", "bench/RESULTS.md", "where to write the results (relative to the repository root)")
	flag.IntVar(&o.podRounds, "pod-rounds", 40, "figure 1: interleaved rounds of pod starts (one pod per variant each)")
	flag.IntVar(&o.calibRounds, "calib-rounds", 16, "figure 1: rounds comparing the two containerds before hotgpud is plugged in")
	flag.IntVar(&o.liveRounds, "live-rounds", 15, "figure 2: rounds (each: API pairs, a CLI pair, two re-creations)")
	flag.IntVar(&o.apiPerRound, "api-per-round", 10, "figure 2: API attach+detach pairs per round")
	flag.IntVar(&o.cdiRuns, "cdi-runs", 20, "figure 3: runs of each spec generator")
	flag.IntVar(&o.containers, "containers", 1000, "figures 4 and 5: containers recorded in hotgpud")
	flag.IntVar(&o.goCount, "go-count", 5, "go test -count for the Go benchmarks")
	flag.IntVar(&o.integrationCount, "integration-count", 3, "go test -count for integration's BenchmarkAttachDetach (0: skip it)")
	flag.IntVar(&o.clusterCount, "cluster-count", 1, "figure 6: go test -count for integration's cluster benchmarks (0: skip them)")
	flag.StringVar(&o.benchtime, "benchtime", "300ms", "go test -benchtime for the Go benchmarks")
	flag.DurationVar(&o.idle, "idle", 10*time.Second, "figure 5: how long to watch hotgpud's CPU at idle")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "hotgpu-bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func run(ctx context.Context, o options) error {
	if os.Geteuid() != 0 {
		return errors.New("the benchmarks run containerd, runc and hotgpud and need root: run `sudo make bench`")
	}
	start := time.Now()
	repo, err := bench.FindRepo()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "hotgpu-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	rep := &bench.Report{Machine: bench.ProbeMachine(), Command: "make bench"}
	t, bins, err := prepare(ctx, repo, work, rep)
	if err != nil {
		return err
	}
	secs, err := measure(ctx, o, t, bins, work)
	if err != nil {
		return err
	}
	rep.Sections = secs
	rep.Machine.LoadEnd = bench.LoadNow()
	rep.Took = time.Since(start)
	rep.Setup = append(rep.Setup, fmt.Sprintf("This run took %s, builds from cache included.", rep.Took.Round(time.Second)))
	out := o.out
	if !filepath.IsAbs(out) {
		out = filepath.Join(repo, out)
	}
	return write(out, rep)
}

func write(path string, rep *bench.Report) error {
	f, err := os.Create(path + ".tmp")
	if err != nil {
		return fmt.Errorf("failed to write results: %w", err)
	}
	if err := rep.WriteMarkdown(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		return err
	}
	logf("wrote %s", path)
	return nil
}

func figureErr(n int, err error) error {
	return fmt.Errorf("figure %d: %w", n, err)
}

// lastField is the version in "containerd github.com/... v2.2.9".
func lastField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}
