package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/hotgpu/hotgpu/bench"
	"github.com/hotgpu/hotgpu/integration/harness"
)

// prepare builds (or finds cached) everything a run needs and notes the cost.
func prepare(ctx context.Context, repo, work string, rep *bench.Report) (*bench.Tools, *harness.Bins, error) {
	logf("building containerd, runc and images (integration/deps.sh; cached after the first run)")
	bins, took, err := harness.BuildDeps(ctx)
	if err != nil {
		return nil, nil, err
	}
	logf("building hotgpud, hotgpu and the baselines (bench/deps.sh; cached after the first run)")
	t, err := bench.BuildTools(ctx, repo, filepath.Join(work, "bin"))
	if err != nil {
		return nil, nil, err
	}
	rep.Machine.Containerd = lastField(bench.BinaryVersion(bins.Containerd, "--version"))
	rep.Machine.Runc = lastField(bench.BinaryVersion(bins.Runc, "--version"))
	rep.Setup = append(rep.Setup,
		fmt.Sprintf("integration/deps.sh (containerd v2.2.9, runc v1.5.2, images): %s this run; a clean build is ~3 min on 2 cores, once.", took.Round(time.Millisecond)),
		fmt.Sprintf("bench/deps.sh (nvidia-ctk and nvidia-container-runtime v1.20.1 from the Go module proxy, built in a tools module under $HOTGPU_CACHE/src, outside hotgpu's go.mod): %s this run; a clean build (download included) took 45 s here, once.", t.Took["baselines (bench/deps.sh)"].Round(time.Millisecond)),
		fmt.Sprintf("hotgpud and hotgpu: built in %s.", t.Took["hotgpu binaries"].Round(time.Millisecond)))
	return t, bins, nil
}

// measure runs the five figures: the process-only ones first, the two
// containerds next, and the integration benchmark (its own containerd) last.
func measure(ctx context.Context, o options, t *bench.Tools, bins *harness.Bins, work string) ([]*bench.Section, error) {
	logf("figure 3: CDI spec generation, hotgpu vs nvidia-ctk (%d runs each)", o.cdiRuns)
	s3 := bench.SpecGeneration(ctx, t, work, o.cdiRuns)
	if t.BaselineErr != nil {
		s3.Note("nvidia-ctk could not be built: %v", t.BaselineErr)
	}
	gb, notes := bench.GoBenches{}, map[int][]string{}
	runGoBenches(ctx, t.Repo, o, unitBenches, gb, notes)

	logf("figures 4-5: hotgpud footprint with %d containers (idle CPU over %s)", o.containers, o.idle)
	f4, s5, err := bench.Footprint(ctx, t.Hotgpud, work, o.containers, o.idle)
	if err != nil {
		return nil, figureErr(5, err)
	}
	s1, s2, err := onContainerd(ctx, o, t, bins, work)
	if err != nil {
		return nil, err
	}
	if o.integrationCount > 0 {
		runGoBenches(ctx, t.Repo, options{goCount: o.integrationCount, benchtime: "1s"},
			[]goBench{{"./integration", "^BenchmarkAttachDetach$", 2}}, gb, notes)
	}

	if o.clusterCount > 0 {
		logf("figure 6: a real single-node cluster, hotgpu deployed by its DaemonSet")
		runGoBenches(ctx, t.Repo, options{goCount: o.clusterCount, benchtime: "10x"},
			[]goBench{{"./integration", "^BenchmarkClusterPodStart$", 6}}, gb, notes)
		runGoBenches(ctx, t.Repo, options{goCount: o.clusterCount, benchtime: "3x"},
			[]goBench{{"./integration", "^BenchmarkDaemonSetRestart$", 6}}, gb, notes)
		runGoBenches(ctx, t.Repo, options{goCount: o.clusterCount, benchtime: "10x"}, []goBench{attachmentBench}, gb, notes)
	}
	runDRABenches(ctx, t.Repo, o, gb, notes)

	s4 := &bench.Section{Title: "Allocation and NRI handling"}
	addGoRows(gb, s2, s3, s4)
	s6 := clusterRows(gb)
	addDRARows(gb, s4, s6)
	attachmentRows(gb, s6)
	for _, r := range f4 {
		s4.Add(r)
	}
	s4.Note("NVIDIA's k8s-device-plugin is not run here: it needs NVML (libnvidia-ml.so on a GPU node) to start, which this GPU-less machine lacks, so its 16–30 s for 7 of 8 is the users' report the issue quotes, not a measurement")
	s2.Note("GPUMounter (the other live-attach tool) is not run: it needs a Kubernetes API server and nvidia-docker; as the issue says, the baseline for live attach is stopping and re-creating the container")
	secs := []*bench.Section{s1, s2, s3, s4, s5, s6}
	for fig, ns := range notes {
		for _, n := range ns {
			secs[fig-1].Note("%s", n)
		}
	}
	return secs, nil
}

// onContainerd measures figures 1 and 2 on two private containerds.
func onContainerd(ctx context.Context, o options, t *bench.Tools, bins *harness.Bins, work string) (s1, s2 *bench.Section, err error) {
	logf("starting two containerds")
	env, err := bench.StartEnv(ctx, bins, t, work)
	if err != nil {
		return nil, nil, figureErr(1, err)
	}
	defer func() {
		if err := env.Close(); err != nil {
			logf("cleanup: %v", err)
		}
	}()
	logf("figure 1: calibrating the two containerds (%d rounds)", o.calibRounds)
	calib, err := bench.Calibrate(ctx, env, o.calibRounds)
	if err != nil {
		return nil, nil, figureErr(1, err)
	}
	if err := env.StartDaemon(ctx, t.Hotgpud, filepath.Join(work, "hotgpud")); err != nil {
		return nil, nil, figureErr(1, err)
	}
	logf("figure 1: pod starts, variants interleaved (%d rounds)", o.podRounds)
	if s1, err = bench.PodStart(ctx, env, o.podRounds, calib); err != nil {
		return nil, nil, figureErr(1, err)
	}
	logf("figure 2: live attach/detach (%d rounds)", o.liveRounds)
	if s2, err = bench.LiveAttach(ctx, env, t.Hotgpu, o.liveRounds, o.apiPerRound); err != nil {
		return nil, nil, figureErr(2, err)
	}
	return s1, s2, nil
}

func addRow(s *bench.Section, r *bench.Row) {
	if r != nil {
		s.Add(*r)
	}
}
