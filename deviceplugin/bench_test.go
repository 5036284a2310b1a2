package deviceplugin

import (
	"context"
	"slices"
	"testing"
	"time"

	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/hotgpu/hotgpu/internal/ledger"
)

// BenchmarkAllocate allocates all 8 GPUs of a simulated DGX A100 and frees
// them again outside the timing. "file" includes persisting the ledger
// (temp file, fsync, rename), which Allocate must do before answering, so it
// measures the disk; "memory" is the plugin's own cost.
func BenchmarkAllocate(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		f := newFixture(b, "dgxa100")
		l, err := ledger.New(&memStore{})
		if err != nil {
			b.Fatal(err)
		}
		f.ledger, f.p.ledger = l, l
		benchAllocate(b, f)
	})
	b.Run("file", func(b *testing.B) { benchAllocate(b, newFixture(b, "dgxa100")) })
}

type memStore struct{ grants []ledger.Grant }

func (m *memStore) Load() ([]ledger.Grant, error) { return m.grants, nil }
func (m *memStore) Save(g []ledger.Grant) error   { m.grants = g; return nil }

func benchAllocate(b *testing.B, f *fixture) {
	var ids []string
	for i := range 8 {
		ids = append(ids, f.uuid(i))
	}
	req := &pluginapi.AllocateRequest{ContainerRequests: []*pluginapi.ContainerAllocateRequest{{DevicesIds: ids}}}
	lat := make([]time.Duration, 0, b.N)
	for b.Loop() {
		start := time.Now()
		if _, err := f.p.Allocate(context.Background(), req); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		if _, err := f.ledger.ReleaseWhere(func(ledger.Grant) bool { return true }); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	reportP99(b, lat)
}

// BenchmarkGetPreferredAllocation asks for 7 of 8 GPUs with one must-include
// (the case NVIDIA's plugin takes 16-30 s for in users' reports).
func BenchmarkGetPreferredAllocation(b *testing.B) {
	for _, preset := range []string{"dgxa100", "pcie8"} {
		b.Run(preset, func(b *testing.B) {
			f := newFixture(b, preset)
			var ids []string
			for i := range 8 {
				ids = append(ids, f.uuid(i))
			}
			req := &pluginapi.PreferredAllocationRequest{ContainerRequests: []*pluginapi.ContainerPreferredAllocationRequest{
				{AvailableDeviceIDs: ids, MustIncludeDeviceIDs: ids[5:6], AllocationSize: 7},
			}}
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				if _, err := f.p.GetPreferredAllocation(context.Background(), req); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			reportP99(b, lat)
		})
	}
}

func reportP99(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
