package apiserver

import (
	"context"
	"strings"
	"testing"

	"github.com/hotgpu/hotgpu/internal/api"
	"github.com/hotgpu/hotgpu/internal/gpu"
	"github.com/hotgpu/hotgpu/internal/ledger"
)

type hookFake struct {
	fakeBackend
	reserved []api.HookReserveRequest
	released []string
}

func (f *hookFake) HookReserve(req api.HookReserveRequest) (*api.HookReservation, error) {
	f.reserved = append(f.reserved, req)
	if req.IDs[0] == "7" {
		return nil, &ledger.HeldError{GPU: "GPU-7", By: ledger.Grant{Holder: ledger.Holder{ContainerID: "other"}, Reason: ledger.Hook}}
	}
	return &api.HookReservation{GPUs: []gpu.GPU{{Index: 1, Minor: 1}}}, nil
}

func (f *hookFake) HookRelease(id string) ([]ledger.Grant, error) {
	f.released = append(f.released, id)
	return nil, nil
}

func TestHookEndpoints(t *testing.T) {
	b := &hookFake{}
	_, c := serve(t, b)
	ctx := context.Background()
	res, err := c.HookReserve(ctx, api.HookReserveRequest{ContainerID: "abc", PID: 42, IDs: []string{"1"}})
	if err != nil || len(res.GPUs) != 1 || res.GPUs[0].Minor != 1 {
		t.Fatalf("reserve = %+v, %v", res, err)
	}
	if _, err := c.HookReserve(ctx, api.HookReserveRequest{ContainerID: "abc", PID: 42, IDs: []string{"7"}}); err == nil || !strings.Contains(err.Error(), "held by") {
		t.Errorf("held GPU: %v", err)
	}
	for name, req := range map[string]api.HookReserveRequest{
		"all and ids": {ContainerID: "abc", PID: 42, IDs: []string{"1"}, All: true},
		"pid 1":       {ContainerID: "abc", PID: 1, IDs: []string{"1"}},
		"bad id":      {ContainerID: "abc", PID: 42, IDs: []string{"1;rm"}},
		"newline id":  {ContainerID: "a\nb", PID: 42, IDs: []string{"1"}},
	} {
		if _, err := c.HookReserve(ctx, req); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := c.HookRelease(ctx, "abc"); err != nil || len(b.released) != 1 {
		t.Errorf("release: %v %v", err, b.released)
	}
	if len(b.reserved) != 2 {
		t.Errorf("backend saw %d reservations, want the 2 valid ones", len(b.reserved))
	}
}

// A backend without hook support answers 404, so an old hotgpud fails the
// hook loudly instead of letting it run without the ledger.
func TestHookEndpointsOptional(t *testing.T) {
	_, c := serve(t, &fakeBackend{})
	if _, err := c.HookReserve(context.Background(), api.HookReserveRequest{ContainerID: "abc", PID: 42, IDs: []string{"1"}}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("err = %v, want 404", err)
	}
}
