package integration

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkClusterDRAPodStart measures pod create -> Running as a user sees
// it, on the cluster with hotgpu deployed by its DaemonSet, for one GPU
// asked three ways, interleaved round by round: none (plain), one
// nvidia.com/gpu (the device plugin's Allocate), and one gpu.hotgpu.dev
// device through a ResourceClaimTemplate (the claim made by the controller
// manager, allocated by the scheduler, prepared by hotgpud's DRA plugin).
// It reports each variant's median in ms; polling the API every 10 ms
// bounds the resolution.
//
//	go test -run '^$' -bench ClusterDRAPodStart -benchtime 10x ./integration/
func BenchmarkClusterDRAPodStart(b *testing.B) {
	h := deployHotgpu(b)
	eventually(b, time.Minute, "the node's ResourceSlice with 8 GPUs", func() (bool, string) {
		n, err := sliceDevices(h.Cluster)
		return n == 8, fmt.Sprintf("%d devices (%v)", n, err)
	})
	claimTemplate(b, h.Cluster, "bench-one", 1)
	var plain, dp, dra []time.Duration
	i := 0
	for b.Loop() {
		plain = append(plain, podStart(b, h.Cluster, busyboxPod(fmt.Sprintf("plain-%d", i), 0)))
		dp = append(dp, podStart(b, h.Cluster, busyboxPod(fmt.Sprintf("gpu-%d", i), 1)))
		dra = append(dra, podStart(b, h.Cluster, claimPod(fmt.Sprintf("dra-%d", i), "bench-one")))
		i++
	}
	b.StopTimer()
	// every claim unprepared: the ledger empty again
	eventually(b, time.Minute, "every GPU free", func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		gpus, err := h.api.GPUs(ctx)
		if err != nil {
			return false, err.Error()
		}
		for _, g := range gpus {
			if g.Grant != nil {
				return false, fmt.Sprintf("GPU %d held by %+v", g.Index, g.Grant)
			}
		}
		return true, ""
	})
	b.ReportMetric(median(plain), "plain-p50-ms")
	b.ReportMetric(median(dp), "gpu1-p50-ms")
	b.ReportMetric(median(dra), "dra1-p50-ms")
}
