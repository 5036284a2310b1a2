package v1

import (
	"strings"
	"testing"
)

func TestMetricsAddress(t *testing.T) {
	tests := []struct {
		name, addr, wantErr string
	}{
		{"off by default", "", ""},
		{"all interfaces", ":9402", ""},
		{"loopback", "127.0.0.1:9402", ""},
		{"no port", "9402", "metrics.address"},
		{"url", "http://x:1", "metrics.address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte("version: v1\nmetrics:\n  address: \"" + tt.addr + "\"\n"))
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("address %q: err %v, want %q", tt.addr, err, tt.wantErr)
			}
		})
	}
	if Default().Metrics.Address != "" {
		t.Error("metrics must be off by default")
	}
}
