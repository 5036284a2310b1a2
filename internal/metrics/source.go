package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var (
	gpusDesc = prometheus.NewDesc(namespace+"_gpus", "GPUs on the node by state: free, unhealthy, or the reason they are held (kubelet, annotation, attach, hook, quarantine).",
		[]string{"state"}, nil)
	nriDesc = prometheus.NewDesc(namespace+"_nri_connected", "1 while the NRI connection to the runtime is up (absent when NRI is disabled).", nil, nil)
)

// knownStates are always exported, 0 when empty, so dashboards and alerts
// need no absent() dance.
var knownStates = []string{"free", "unhealthy", "kubelet", "annotation", "attach", "hook", "quarantine"}

// sourceCollector reads the Source at scrape time.
type sourceCollector struct{ src Source }

func (c *sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- gpusDesc
	ch <- nriDesc
}

func (c *sourceCollector) Collect(ch chan<- prometheus.Metric) {
	if c.src == nil {
		return
	}
	states := c.src.GPUStates()
	for _, s := range knownStates {
		ch <- prometheus.MustNewConstMetric(gpusDesc, prometheus.GaugeValue, float64(states[s]), s)
	}
	for s, n := range states {
		if !isKnown(s) {
			ch <- prometheus.MustNewConstMetric(gpusDesc, prometheus.GaugeValue, float64(n), s)
		}
	}
	if up, ok := c.src.NRIConnected(); ok {
		v := 0.0
		if up {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(nriDesc, prometheus.GaugeValue, v)
	}
}

func isKnown(s string) bool {
	for _, k := range knownStates {
		if k == s {
			return true
		}
	}
	return false
}

func readValue(m prometheus.Metric) float64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil || out.Counter == nil {
		return 0
	}
	return out.Counter.GetValue()
}
