package dra

import (
	"context"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
)

// BenchmarkPrepare is kubelet's NodePrepareResources on the plugin, in
// process: a claim of 1 or 8 GPUs (pcie8) held in the ledger (fsynced on
// disk) and its CDI spec written. Unprepare runs between rounds, untimed.
// It reports the median, beside deviceplugin's BenchmarkAllocate.
func BenchmarkPrepare(b *testing.B) {
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("%dgpu", n), func(b *testing.B) {
			f := newFixture(b)
			f.d.log.Logger.SetOutput(io.Discard) // a line per claim
			var devs []string
			for i := range n {
				devs = append(devs, fmt.Sprintf("gpu-%d", i))
			}
			c := claim("uid-bench", devs...)
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				res, err := f.d.PrepareResourceClaims(ctx, []*resourceapi.ResourceClaim{c})
				lat = append(lat, time.Since(start))
				if err != nil || res[c.UID].Err != nil {
					b.Fatal(err, res[c.UID].Err)
				}
				b.StopTimer()
				if _, err := f.d.UnprepareResourceClaims(ctx, []kubeletplugin.NamespacedObject{{UID: c.UID}}); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
		})
	}
}
