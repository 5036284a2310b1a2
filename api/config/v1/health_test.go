package v1

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHealthAndDevicePluginConfig(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		wantErr string
		check   func(*Config) bool
	}{
		{name: "defaults", doc: "version: v1\n", check: func(c *Config) bool {
			return c.Health.RecoveryWindow.Duration == 5*time.Minute && slices.Equal(c.Health.IgnoredXids, []uint64{13, 31, 43, 45, 68, 109}) &&
				c.DevicePlugin.ResourceName == "nvidia.com/gpu"
		}},
		{name: "ignore list replaces the default", doc: "version: v1\nhealth:\n  ignoredXids: [13]\n  recoveryWindow: 0s\n", check: func(c *Config) bool {
			return slices.Equal(c.Health.IgnoredXids, []uint64{13}) && c.Health.RecoveryWindow.Duration == 0
		}},
		{name: "negative window", doc: "version: v1\nhealth:\n  recoveryWindow: -1s\n", wantErr: "health.recoveryWindow"},
		{name: "bad resource name", doc: "version: v1\ndevicePlugin:\n  resourceName: gpu\n", wantErr: "devicePlugin.resourceName"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one about %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("config = %+v %+v", c.Health, c.DevicePlugin)
			}
		})
	}
}
