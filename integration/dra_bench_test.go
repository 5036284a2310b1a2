package integration

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkClusterDRAPodStart measures pod create -> Running as a user sees
// it, on the cluster with hotgpu deployed by its DaemonSet, for one GPU
// asked three ways, interleaved round by round: none (plain), one
// nvidia.com/gpu (the device plugin's Allocate), and one gpu.hotgpu.dev
// device through a ResourceClaimTemplate (the claim made by the controller
// manager, allocated by the scheduler, prepared by hotgpud's DRA plugin).
// It reports each variant's median in ms (polling the API every 10 ms
// bounds the resolution) and the mean Prepare hotgpud's /metrics recorded.
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
	h.waitNoGrants(b, "", "every GPU free")
	b.ReportMetric(median(plain), "plain-p50-ms")
	b.ReportMetric(median(dp), "gpu1-p50-ms")
	b.ReportMetric(median(dra), "dra1-p50-ms")
	b.ReportMetric(prepareMean(b), "prepare-mean-ms")
}

// prepareMean is the mean Prepare of the DaemonSet's hotgpud, from its
// /metrics (the overlay's host network: :9402 on this host): the sum and
// count of hotgpu_operation_duration_seconds{op="dra-prepare"}.
func prepareMean(b *testing.B) float64 {
	b.Helper()
	resp, err := http.Get("http://127.0.0.1:9402/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var sum, count float64
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		name, value, _ := strings.Cut(s.Text(), " ")
		v, err := strconv.ParseFloat(value, 64)
		switch {
		case err != nil:
		case name == `hotgpu_operation_duration_seconds_sum{op="dra-prepare"}`:
			sum = v
		case name == `hotgpu_operation_duration_seconds_count{op="dra-prepare"}`:
			count = v
		}
	}
	if count == 0 {
		b.Fatal("hotgpud's /metrics has no dra-prepare")
	}
	return sum / count * 1e3
}
