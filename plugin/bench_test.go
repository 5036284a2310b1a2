package plugin

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"

	"github.com/hotgpu/hotgpu/internal/policy"
	"github.com/hotgpu/hotgpu/internal/registry"
)

// BenchmarkCreateContainer measures CreateContainer + RemoveContainer of an
// annotated container on an 8-GPU node with 1,000 containers recorded,
// including the fsynced ledger writes.
func BenchmarkCreateContainer(b *testing.B) {
	benchCreate(b, newFixture(b, 8))
}

// BenchmarkCreateContainerTmpfsLedger is the same with the ledger on tmpfs:
// the handling itself, without the disk's fsync latency.
func BenchmarkCreateContainerTmpfsLedger(b *testing.B) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		b.Skip("no /dev/shm")
	}
	dir, err := os.MkdirTemp("/dev/shm", "hotgpu-bench-")
	if err != nil {
		b.Skip(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	benchCreate(b, newFixtureIn(b, 8, dir))
}

func benchCreate(b *testing.B, f *fixture) {
	regs := make([]registry.Container, 1000)
	for i := range regs {
		regs[i] = registry.Container{ID: fmt.Sprintf("c%04d", i), Name: "app", PodNamespace: "ml", PodName: fmt.Sprint("p", i)}
	}
	f.p.registry.Replace(regs)
	sb := pod("ml", "p", map[string]string{policy.AnnotationKey("train"): "1"})
	c := ctr("bench", "train")
	ctx := context.Background()
	var create []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, _, err := f.p.CreateContainer(ctx, sb, c); err != nil {
			b.Fatal(err)
		}
		create = append(create, time.Since(start))
		if err := f.p.RemoveContainer(ctx, sb, c); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(create)
	b.ReportMetric(float64(create[len(create)/2].Microseconds()), "create-p50-µs")
	b.ReportMetric(float64(create[len(create)*99/100].Microseconds()), "create-p99-µs")
}

// BenchmarkCreateContainerNoGPU is the cost for the common container that
// asks for nothing.
func BenchmarkCreateContainerNoGPU(b *testing.B) {
	f := newFixture(b, 8)
	sb := pod("ml", "p", nil)
	c := ctr("plain", "app", "PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all")
	for b.Loop() {
		if _, _, err := f.p.CreateContainer(context.Background(), sb, c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSynchronize1000 reconciles 1,000 running containers, 8 of them
// holding GPUs.
func BenchmarkSynchronize1000(b *testing.B) {
	f := newFixture(b, 8)
	sb := &api.PodSandbox{Id: "sb", Uid: "u", Namespace: "ml", Name: "p"}
	var cs []*api.Container
	for i := 0; i < 1000; i++ {
		c := &api.Container{Id: fmt.Sprintf("c%04d", i), PodSandboxId: "sb", Name: "app", State: api.ContainerState_CONTAINER_RUNNING, Linux: &api.LinuxContainer{}}
		if i < 8 {
			c.Linux.Devices = []*api.LinuxDevice{{Path: fmt.Sprintf("/dev/nvidia%d", i), Type: "c", Major: 195, Minor: int64(i)}}
		}
		cs = append(cs, c)
	}
	ctx := context.Background()
	for b.Loop() {
		if _, err := f.p.Synchronize(ctx, []*api.PodSandbox{sb}, cs); err != nil {
			b.Fatal(err)
		}
	}
}
