package apiserver

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/api"
)

type healthBackend struct {
	fakeBackend
	set []api.HealthSetRequest
}

func (h *healthBackend) Health() []api.HealthStatus {
	return []api.HealthStatus{{Index: 0, UUID: "GPU-0", Healthy: true}, {Index: 1, UUID: "GPU-1", Reason: "Xid 79"}}
}

func (h *healthBackend) SetHealth(req api.HealthSetRequest) (*api.HealthStatus, error) {
	if req.ID == "9" {
		return nil, fmt.Errorf("%w: GPU 9 does not exist", ErrUnknownGPU)
	}
	h.set = append(h.set, req)
	return &api.HealthStatus{Index: 1, UUID: "GPU-1", Healthy: req.Healthy, Reason: req.Reason, Manual: !req.Healthy}, nil
}

func TestHealthAPI(t *testing.T) {
	b := &healthBackend{}
	_, c := serve(t, b)
	ctx := context.Background()
	list, err := c.Health(ctx)
	if err != nil || len(list) != 2 || list[1].Healthy || list[1].Reason != "Xid 79" {
		t.Fatalf("Health = %+v, %v", list, err)
	}
	tests := []struct {
		name    string
		req     api.HealthSetRequest
		wantErr string
	}{
		{"unhealthy", api.HealthSetRequest{ID: "1", Reason: "fan"}, ""},
		{"healthy by UUID", api.HealthSetRequest{ID: "GPU-8c2f6a1e-1234-5678-9abc-def012345678", Healthy: true}, ""},
		{"unknown GPU", api.HealthSetRequest{ID: "9"}, "does not exist"},
		{"path as id", api.HealthSetRequest{ID: "../x"}, "not a GPU index or UUID"},
		{"control characters in reason", api.HealthSetRequest{ID: "1", Reason: "a\nb"}, "printable"},
		{"long reason", api.HealthSetRequest{ID: "1", Reason: strings.Repeat("x", maxReason+1)}, "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := c.SetHealth(ctx, tt.req)
			if tt.wantErr == "" {
				if err != nil || st.Healthy != tt.req.Healthy {
					t.Fatalf("SetHealth = %+v, %v", st, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if len(b.set) != 2 {
		t.Fatalf("backend saw %d valid calls, want 2", len(b.set))
	}
}

func TestHealthAPIAbsentWithoutBackend(t *testing.T) {
	_, c := serve(t, &fakeBackend{})
	if _, err := c.Health(context.Background()); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("err = %v, want 404", err)
	}
}
